"""Tiny-model pretraining helpers: the reasoner round trip (save, cached re-run, identical tokenization on
reload) and the captioner's data (descriptions parsed back, text-only arithmetic rows)."""

from __future__ import annotations

import numpy as np


def test_reasoner_pretrain_roundtrip_and_cache(tmp_path):
    from recipes.sophia.pretrain_reasoner import parse_args, pretrain, synth_example
    from recipes.sophia.reasoners import LocalReasoner, Sampling
    from verl.models.tiny import build_tokenizer

    a = parse_args(["--out", str(tmp_path / "r"), "--steps", "2", "--batch-size", "4", "--eval-items", "2"])
    out = pretrain(a)
    report = (out / "report.json").stat().st_mtime_ns
    assert pretrain(a) == out and (out / "report.json").stat().st_mtime_ns == report  # cached: no retraining
    prompt, target, gold, _ = synth_example(np.random.default_rng(0), 0.0)
    assert target.endswith(f"\\boxed{{{gold}}}.")
    r = LocalReasoner(out, trust_remote_code=False)
    text = prompt + " " + target
    assert r.tokenizer(text)["input_ids"] == build_tokenizer("qwen2_5_vl")(text)["input_ids"]  # as trained
    outs = r.generate([prompt, prompt + " x"], Sampling(n=3, temperature=1.0, max_new_tokens=4, seed=1))
    assert [len(o) for o in outs] == [3, 3] and r.calls == 6


def test_captioner_data_helpers():
    from recipes.sophia.pairs import describe
    from recipes.sophia.pretrain_captioner import arithmetic_rows, parse_description

    assert parse_description(describe(3, 7)) == (3, 7)
    assert parse_description("The left digit is 3.") == (None, None)
    rows = arithmetic_rows(np.random.default_rng(0), 40)
    assert all(not r.images and "?" not in r.target and "boxed" not in r.target for r in rows)
    for r in rows:  # the result is right
        lhs, rhs = r.target.rstrip(".").split(" = ") if " = " in r.target else (None, None)
        if lhs is not None:
            assert int(eval(lhs)) == int(rhs)  # noqa: S307 - digits and one operator
