"""Pretrain the tiny captioner VLM: it learns to DESCRIBE a digit-pair image, never to answer a question.

    python -m recipes.sophia.pretrain_captioner --data data/sophia_pairs --out checkpoints/sophia/captioner

A tiny offline Qwen2.5-VL (``verl.models.tiny``) is trained with the world-size-1 ``FSDPActor.sft_step``
on ``caption_train``: (image, the fixed describe prompt of ``prompts.build_caption_messages``) ->
"The left digit is 3. The right digit is 7.". Like the language model of a real VLM, it also learns
some text-only skills: ``--arith-batch`` text rows per step (no image) of digit arithmetic in the
equation style the reasoner writes ("Compute 8 - 4." -> "8 - 4 = 4."). It never sees a question about
an image, a ``\boxed{}`` answer or a reasoning chain. The result is a plain HF folder
(``FSDPActor.export_hf``); ``stamp.json`` holds the arguments (and a hash of ``caption_train.json``), so a
second call with the same arguments is a no-op. ``report.json`` gives the greedy and sampled (T=1)
description accuracy on ``sophia_train`` images (both digits right; each digit right).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from recipes.sophia.prompts import build_caption_messages
from recipes.sophia.runio import (
    run_pretrain_cli,
    up_to_date_or_cleared,
    write_json,
    write_stamp,
)
from recipes.sophia.vlm_data import SFTRow, make_actor, sft_dataproto
from verl.config.schema import ActorConfig, FSDPConfig, ModelConfig, OptimConfig, RolloutConfig
from verl.data.formats import Record, load_records
from verl.models.family import FAMILIES
from verl.workers.rollout.base import SamplingSpec
from verl.workers.rollout.generate import generate_texts

logger = logging.getLogger("recipes.sophia.pretrain_captioner")
_DESC_RE = re.compile(r"left digit is (\d)\b.*?right digit is (\d)\b", re.IGNORECASE | re.DOTALL)


def parse_description(text: str) -> tuple[int | None, int | None]:
    """(left, right) digits named by a description; ``None`` where it names none."""
    m = _DESC_RE.search(text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def caption_rows(records: list[Record], prompt: str = "brief") -> list[SFTRow]:
    """Describe-prompt rows whose target is the reference description."""
    from recipes.sophia.pairs import describe

    msgs = build_caption_messages(1, prompt)
    return [SFTRow(r.uid, msgs, list(r.images), describe(r.extra["left"], r.extra["right"])) for r in records]


def arithmetic_rows(rng: np.random.Generator, n: int) -> list[SFTRow]:
    """Text-only rows: a digit operation and its result, written like the reasoner's equations."""
    rows = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(0, 10, size=2))
        hi, lo = max(a, b), min(a, b)
        kind = int(rng.integers(4))
        prompt, target = [
            (f"Compute {a} + {b}.", f"{a} + {b} = {a + b}."),
            (f"Compute {hi} - {lo}.", f"{hi} - {lo} = {hi - lo}."),
            (f"Compute {a} * {b}.", f"{a} * {b} = {a * b}."),
            (f"Which digit is larger, {a} or {b}?", f"{hi} is larger than {lo}, so the larger digit is {hi}."),
        ][kind]
        rows.append(SFTRow(f"text:{prompt}", [{"role": "user", "content": prompt}], [], target))
    return rows


def _cpu_model(path: str | Path) -> ModelConfig:
    """The tiny captioner on CPU: float32, no gradient checkpointing, nothing frozen."""
    return ModelConfig(path=str(path), dtype="float32", enable_gradient_checkpointing=False)


def caption_accuracy(model_path: str | Path, records: list[Record], n: int = 1, temperature: float = 0.0,
                     seed: int = 0, max_new_tokens: int = 24, prompt: str = "brief") -> dict[str, float]:
    """Share of descriptions with both digits right, and of digits right (greedy when temperature 0)."""
    from verl.workers.rollout import make_rollout

    engine = make_rollout(RolloutConfig(name="hf"), _cpu_model(model_path), device="cpu", seed=seed)
    spec = SamplingSpec(n=n, temperature=temperature, top_k=-1, max_new_tokens=max_new_tokens, seed=seed)
    texts = generate_texts(engine.generate, [build_caption_messages(1, prompt)] * len(records),
                           [list(r.images) for r in records], spec, batch_size=64, reseed_chunks=True)
    both, digits = [], []
    for r, outs in zip(records, texts):
        for t in outs:
            left, right = parse_description(t)
            ok = (left == r.extra["left"], right == r.extra["right"])
            both.append(all(ok))
            digits.extend(ok)
    return {"both_digits": float(np.mean(both)), "per_digit": float(np.mean(digits)), "n": len(both)}


def arithmetic_accuracy(model_path: str | Path, n: int = 64, seed: int = 999) -> float:
    """Greedy exact-match accuracy on text-only arithmetic rows (the text skill, not an image question)."""
    from verl.workers.rollout import make_rollout

    rows = arithmetic_rows(np.random.default_rng(seed), n)
    engine = make_rollout(RolloutConfig(name="hf"), _cpu_model(model_path), device="cpu", seed=seed)
    greedy = SamplingSpec(n=1, temperature=0.0, top_k=-1, max_new_tokens=24, seed=0)
    texts = generate_texts(engine.generate, [r.prompt for r in rows], [[] for _ in rows], greedy, batch_size=64,
                           reseed_chunks=True)
    return float(np.mean([t[0].strip() == r.target for t, r in zip(texts, rows)]))


def _stamp(a: argparse.Namespace) -> dict:
    d = {k: getattr(a, k) for k in ("arch", "steps", "batch_size", "arith_batch", "lr", "seed", "caption_prompt")}
    d["caption_train"] = hashlib.sha256((Path(a.data) / "caption_train.json").read_bytes()).hexdigest()[:16]
    return d


def pretrain(a: argparse.Namespace) -> Path:
    """Train and export (or reuse) the captioner; returns its folder."""
    from verl.models.tiny import build_tiny_vlm

    out, data = Path(a.out), Path(a.data)
    stamp = _stamp(a)
    if up_to_date_or_cleared(out, stamp, "captioner"):
        return out
    init = out.with_name(out.name + "_init")
    torch.manual_seed(a.seed)
    build_tiny_vlm(a.arch, init, seed=a.seed)
    optim = OptimConfig(lr=a.lr, weight_decay=0.01, lr_warmup_steps=max(1, a.steps // 20), lr_scheduler_type="cosine",
                        min_lr_ratio=0.1, total_training_steps=a.steps)
    actor = make_actor(_cpu_model(init), ActorConfig(optim=optim, ppo_micro_batch_size_per_gpu=a.batch_size,
                                                     use_kl_loss=False, fsdp=FSDPConfig(param_dtype="float32")))
    rows = caption_rows(load_records([data / "caption_train.json"]), a.caption_prompt)
    rng = np.random.default_rng(a.seed)
    cache: dict = {}
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        idx = rng.choice(len(rows), size=a.batch_size, replace=False)
        batch = [rows[i] for i in idx] + arithmetic_rows(rng, a.arith_batch)
        m = actor.sft_step(sft_dataproto(actor.processor, batch, prompt_cache=cache))
        if step == 1 or step % 50 == 0 or step == a.steps:
            logger.info("step %d/%d loss %.4f (%.0f s)", step, a.steps, m["actor/sft_loss"], time.perf_counter() - t0)
    train_s = time.perf_counter() - t0
    actor.export_hf(out)
    shutil.rmtree(init, ignore_errors=True)
    held = load_records([data / "sophia_train.json"])[: a.eval_items]
    report = {"train_seconds": round(train_s, 1), "args": stamp, "arithmetic": arithmetic_accuracy(out),
              "greedy": caption_accuracy(out, held, prompt=a.caption_prompt),
              "sampled_t1": caption_accuracy(out, held, n=4, temperature=1.0, seed=a.seed, prompt=a.caption_prompt)}
    logger.info("captioner report: %s", json.dumps(report))
    write_json(out / "report.json", report)
    write_stamp(out, stamp)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="qwen2_5_vl", choices=sorted(FAMILIES))
    p.add_argument("--data", default="data/sophia_pairs")
    p.add_argument("--out", default="checkpoints/sophia/captioner")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arith-batch", type=int, default=16, help="text-only arithmetic rows per step (0: none)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (not part of the cache stamp)")
    p.add_argument("--caption-prompt", default="brief", choices=("brief", "detailed"),
                   help="the fixed describe prompt (prompts.CAPTION_PROMPTS); the pipeline must use the same")
    p.add_argument("--eval-items", type=int, default=64, help="sophia_train images in report.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    return run_pretrain_cli(parse_args, pretrain, argv)


if __name__ == "__main__":
    main()
