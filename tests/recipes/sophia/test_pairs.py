"""Digit-pair task data: gold answers, TTRV records the framework reads, determinism, disjoint pools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipes.sophia.pairs import QTYPES, build_pairs_dataset, describe, gold_answer, split_pools

SIZES = {"caption_train": 3, "sophia_train": 8, "eval": 4, "dev": 4}


def test_gold_answers_hand_computed():
    assert [gold_answer(q, 3, 7) for q in QTYPES] == ["10", "4", "21", "7"]
    assert [gold_answer(q, 5, 5) for q in QTYPES] == ["10", "0", "25", "5"]
    assert describe(3, 7) == "The left digit is 3. The right digit is 7."
    with pytest.raises(ValueError, match="quotient"):
        gold_answer("quotient", 1, 2)


def test_records_load_and_are_deterministic(tmp_path):
    from verl.data.formats import load_records

    a = build_pairs_dataset(tmp_path / "a", seed=0, sizes=SIZES)
    b = build_pairs_dataset(tmp_path / "b", seed=0, sizes=SIZES)
    for split in SIZES:
        assert a[split].read_bytes() == b[split].read_bytes()
        rows = json.loads(a[split].read_text())
        assert [r["id"] for r in rows] == [r["id"] for r in json.loads(b[split].read_text())]
        for ra, rb in zip(rows, json.loads(b[split].read_text())):
            assert (a[split].parent / ra["image_path"]).read_bytes() == (b[split].parent / rb["image_path"]).read_bytes()
    recs = load_records([a["sophia_train"]])
    assert len(recs) == 8 and [r.extra["qtype"] for r in recs[:4]] == list(QTYPES)
    for r in recs:
        assert r.prompt[0]["content"].startswith("<image>") and len(r.images) == 1
        assert r.ground_truth == gold_answer(r.extra["qtype"], r.extra["left"], r.extra["right"])
    from PIL import Image

    with Image.open(recs[0].images[0]) as im:
        assert im.size == (112, 56)
    cap = load_records([a["caption_train"]])
    assert all(r.ground_truth == describe(r.extra["left"], r.extra["right"]) for r in cap)
    assert "?" not in cap[0].prompt[0]["content"]  # the captioner data has no question


def test_pools_are_disjoint():
    pools = split_pools(np.zeros(1797, dtype=int), seed=0)
    seen = [set(p.tolist()) for p in pools.values()]
    assert sum(len(s) for s in seen) == 1797 and len(set().union(*seen)) == 1797


def test_dev_split_uses_training_digits_only(tmp_path):
    paths = build_pairs_dataset(tmp_path, seed=0, sizes=SIZES)
    pools = split_pools(np.zeros(1797, dtype=int), seed=0)
    dev = json.loads(paths["dev"].read_text())
    assert len(dev) == SIZES["dev"] and all(r["source"] == "digit_pairs_dev" for r in dev)
    used = {i for r in dev for i in r["digit_index"]}
    assert used <= set(pools["sophia"].tolist()) and not used & set(pools["eval"].tolist())
    train = json.loads(paths["sophia_train"].read_text())
    assert [r["digit_index"] for r in dev] != [r["digit_index"] for r in train[:len(dev)]]  # other pairs


def test_shifted_build_keeps_records_and_clean_caption_images(tmp_path):
    clean = build_pairs_dataset(tmp_path / "clean", seed=0, sizes=SIZES)
    hard = build_pairs_dataset(tmp_path / "hard", seed=0, sizes=SIZES, shift="noise")
    assert json.loads(hard["manifest"].read_text())["shift"] == "noise"
    for split in SIZES:  # same digits, pairs, questions and answers
        assert clean[split].read_bytes() == hard[split].read_bytes()
        for r in json.loads(clean[split].read_text()):
            same = (tmp_path / "clean" / r["image_path"]).read_bytes() == (tmp_path / "hard" / r["image_path"]).read_bytes()
            assert same == (split == "caption_train"), (split, r["id"])  # only question images are shifted
    with pytest.raises(ValueError, match="unknown shift"):
        build_pairs_dataset(tmp_path / "bad", sizes=SIZES, shift="sepia")
