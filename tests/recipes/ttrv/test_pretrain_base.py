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
