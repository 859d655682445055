from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from verl.data.digits import build_digits_dataset, main
from verl.data.formats import read_json_records

SPLITS = ["train", "val", "dev_elastic", "test_noise", "test_blur", "test_rotate", "test_invert", "test_occlude"]


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_sizes_and_manifest(small_digits):
    manifest = json.loads((small_digits / "manifest.json").read_text())
    assert list(manifest["splits"]) == SPLITS
    for split, info in manifest["splits"].items():
        assert info["n"] == 6
        assert info["labeled_for_training"] == (split in ("train", "val"))
        for style in ("mc", "open"):
            rows = json.loads((small_digits / f"{split}_{style}.json").read_text())
            assert len(rows) == 6
            for row in rows:
                assert set(row) >= {"prompt", "image_path", "answer", "source", "id"}
                assert row["source"] == f"digits_{split}"
                assert not row["image_path"].startswith("/")
                assert row["prompt"].count("<image>") == 1
    assert manifest["splits"]["dev_elastic"]["role"] == "dev"
    assert manifest["splits"]["test_rotate"]["role"] == "test"


def test_mc_and_open_styles(small_digits):
    mc = json.loads((small_digits / "test_noise_mc.json").read_text())
    op = json.loads((small_digits / "test_noise_open.json").read_text())
    for a, b in zip(mc, op):
        assert a["id"] == b["id"] and a["image_path"] == b["image_path"]
        assert re.fullmatch(r"[0-9]", b["answer"])
        assert "Answer with the digit only." in b["prompt"]
        opts = dict(re.findall(r"^([A-D])\. (\d)$", a["prompt"], flags=re.M))
        assert sorted(opts) == ["A", "B", "C", "D"]
        assert len(set(opts.values())) == 4  # 3 distinct distractors
        assert opts[a["answer"]] == b["answer"]  # the letter points at the true digit
    recs = read_json_records(small_digits / "test_noise_mc.json")
    assert recs[0].options[recs[0].ground_truth] == mc[0]["digit"]


def test_images_are_rgb_upscaled_and_shifted(small_digits):
    rows = {s: json.loads((small_digits / f"{s}_open.json").read_text()) for s in ("test_invert", "test_noise")}
    # the test splits share images: same ids, different pixels
    assert [r["id"] for r in rows["test_invert"]] == [r["id"] for r in rows["test_noise"]]
    inv = Image.open(small_digits / rows["test_invert"][0]["image_path"])
    assert inv.mode == "RGB" and inv.size == (56, 56)
    clean_rows = json.loads((small_digits / "train_open.json").read_text())
    clean = np.asarray(Image.open(small_digits / clean_rows[0]["image_path"]))
    assert clean[0, 0, 0] == 255  # white paper in the clean split
    assert 140 <= np.asarray(inv)[0, 0, 0] <= 166  # paper blended 35-45 % toward black


def test_deterministic_bytes_and_prefix_stable(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_digits_dataset(a, seed=3, max_per_split=3, image_size=32)
    main(["--out", str(b), "--seed", "3", "--max-per-split", "3", "--image-size", "32"])
    ta, tb = _tree(a), _tree(b)
    assert ta == tb
    # a larger build keeps the first records (and their images) unchanged
    build_digits_dataset(c, seed=3, max_per_split=5, image_size=32)
    rows3 = json.loads((a / "test_blur_mc.json").read_text())
    rows5 = json.loads((c / "test_blur_mc.json").read_text())
    assert rows5[:3] == rows3
    assert (c / rows3[0]["image_path"]).read_bytes() == ta[rows3[0]["image_path"]]
    # another seed gives another selection / order
    d = tmp_path / "d"
    build_digits_dataset(d, seed=4, max_per_split=3, image_size=32)
    assert json.loads((d / "train_mc.json").read_text()) != json.loads((a / "train_mc.json").read_text())


def test_full_split_sizes_are_disjoint_and_stratified():
    from sklearn.datasets import load_digits

    from verl.data.digits import N_DEV, N_TRAIN, N_VAL, _stratified_split

    labels = load_digits().target
    parts = _stratified_split(labels, [N_TRAIN, N_VAL, N_DEV, len(labels) - N_TRAIN - N_VAL - N_DEV], 0)
    assert [len(p) for p in parts] == [1000, 197, 100, 500]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(labels) == 1797
    train_counts = np.bincount(labels[parts[0]], minlength=10)
    assert train_counts.min() >= 95 and train_counts.max() <= 105  # ~100 per class


def test_every_answer_phrasing_reads_back_to_its_digit():
    from verl.data.digits import answer_phrasings
    from verl.rewards.answers import INVALID, extract_answer

    forms = {d: answer_phrasings(d) for d in range(10)}
    assert forms[4] == ["4"] and forms[7] == ["seven", "Answer: 7", "It is a 7.", "The digit is seven."]
    assert [len(f) for f in forms.values()] == [1, 4] * 5
    every = [(d, f) for d, fs in forms.items() for f in fs]
    assert len({f for _, f in every}) == len(every)  # no form is shared by two digits
    unread = [(d, f) for d, f in every if extract_answer(f, None) != str(d)]
    # the same forms as the model writes them: end-of-turn token, trailing space, lower case
    unread += [(d, f) for d, f in every if extract_answer(f"{f.lower()} <|im_end|>", None) != str(d)]
    invalid_ratio = sum(extract_answer(f, None) == INVALID for _, f in every) / len(every)
    assert unread == [] and invalid_ratio == 0.0
