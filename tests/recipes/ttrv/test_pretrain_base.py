"""Pretraining of the tiny base model: loss goes down, the folder reloads, the cache stamp works."""

from __future__ import annotations

import json

import torch

from recipes.ttrv import pretrain_base as P
from verl.data.formats import load_records
from verl.models.load import load_vlm


def test_sft_batch_layout(tiny_vlm_path, digits_dir):
    _, processor = load_vlm(tiny_vlm_path("qwen2_5_vl"), dtype=torch.float32, device="cpu")
    recs = load_records([digits_dir / "train_mc.json"])[:2] + load_records([digits_dir / "train_open.json"])[:1]
    b = P.sft_batch(processor, recs, {})
    tok = processor.tokenizer
    for i, r in enumerate(recs):
        n = int(b["response_mask"][i].sum())
        target = b["input_ids"][i, -b["R"]:][:n]
        assert tok.decode(target) == f"{r.ground_truth}{tok.eos_token}"
    # records 0 and 2 show the same train image (MC and open style): it is encoded once
    same = recs[0].images[0] == recs[2].images[0]
    assert len(b["images"]) == (2 if same else 3)


def test_pretrain_lowers_loss_saves_and_caches(tiny_vlm_path, digits_dir, tmp_path):
    out = tmp_path / "base"
    args = P.parse_args(["--data", str(digits_dir), "--out", str(out), "--steps", "12", "--batch-size", "8",
                         "--eval-n", "0"])
    P.pretrain(args)
    model, processor = load_vlm(out, dtype=torch.float32, device="cpu")
    fresh, _ = load_vlm(tiny_vlm_path("qwen2_5_vl"), dtype=torch.float32, device="cpu")
    recs = load_records([digits_dir / "train_open.json"])[:16]
    batch = P.sft_batch(processor, recs, {})
    with torch.no_grad():
        assert P.sft_loss(model, batch) < P.sft_loss(fresh, batch) - 0.5
    stamp = json.loads((out / P.STAMP).read_text())
    assert stamp["steps"] == 12
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    P.pretrain(args)  # same arguments: nothing to do
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_targets_are_sampled_phrasings_of_the_digit(digits_dir):
    from collections import Counter

    import numpy as np

    from verl.data.digits import answer_phrasings

    op = load_records([digits_dir / "train_open.json"])[:6]
    mc = load_records([digits_dir / "train_mc.json"])[:1]
    rng = np.random.default_rng(0)
    for r in op:
        drawn = Counter(P.target_text(r, "phrasings", rng) for _ in range(400))
        forms = answer_phrasings(int(r.ground_truth))
        assert set(drawn) == set(forms)  # every form is drawn, no other
        assert all(abs(c / 400 - 1 / len(forms)) < 0.08 for c in drawn.values())  # evenly
        assert P.target_text(r, "digit", rng) == r.ground_truth
    assert P.target_text(mc[0], "phrasings", rng) == mc[0].ground_truth  # multiple choice: the letter


def test_phrasing_stats_counts_by_hand():
    from verl.rewards.answers import INVALID, extract_answer

    texts = ["seven<|im_end|>", "It is a 3.<|im_end|>", "The digit is<|im_end|>", "<|im_end|>", "Answer: 7"]
    st = P.phrasing_stats(texts, extract_answer, INVALID)
    assert st["n_outputs"] == 5 and st["read_as_digit"] == 3 / 5 and st["invalid_ratio"] == 1 / 5
    assert st["training_phrasing"] == 3 / 5 and st["distinct_forms"] == 5
    assert st["top_unread"] == [("The digit is", 1), ("", 1)]


def test_regime_check_flags_a_majority_not_above_greedy(monkeypatch, tmp_path, caplog):
    from recipes.ttrv import evaluate as E

    scores = {"greedy": 0.71, "maj@32": 0.73, "mean@32": 0.62}
    monkeypatch.setattr(E, "evaluate", lambda model, files, n, max_samples, max_new_tokens: {"dev_elastic_open": scores})
    r = P.regime_check(tmp_path, tmp_path / "dev_elastic_open.json", 32, 100)
    assert r["majority_minus_greedy"] == 0.02 and r["self_consistency_regime"] is True
    scores.update({"maj@32": 0.71})  # a tie is not the regime
    with caplog.at_level("WARNING"):
        r = P.regime_check(tmp_path, tmp_path / "dev_elastic_open.json", 32, 100)
    assert r["self_consistency_regime"] is False and "NOT above greedy" in caplog.text
