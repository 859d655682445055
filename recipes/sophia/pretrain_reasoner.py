"""Pretrain the tiny off-policy reasoner: a text-only LM that turns a description + question into a
step-by-step solution ending in ``\\boxed{...}``.

    python -m recipes.sophia.pretrain_reasoner --out checkpoints/sophia/reasoner

A randomly initialised ``Qwen2ForCausalLM`` (built from a config, the offline BPE tokenizer of
``verl.models.tiny.build_tokenizer``) is trained on synthetic examples: the reference description of two
random digits ("The left digit is 3. The right digit is 7.", sometimes with a leading sentence), a
question of the four types, and a worked solution in one of several styles of different lengths (so that
"shortest correct" has something to choose). A share ``--noise`` of the targets carries a wrong result,
and training is short: the reasoner is imperfect, its rewards vary. It never sees an image or a VLM
caption. Cached like the captioner (``stamp.json``); ``report.json`` gives greedy and sampled accuracy per
question type on fresh synthetic items.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from recipes.sophia.pairs import QTYPES, QUESTIONS, describe, gold_answer
from recipes.sophia.reasoners import LocalReasoner, Sampling, local_prompt
from recipes.sophia.runio import (
    run_pretrain_cli,
    up_to_date_or_cleared,
    write_json,
    write_stamp,
)
from recipes.sophia.verify import reasoning_reward

logger = logging.getLogger("recipes.sophia.pretrain_reasoner")

_OP = {"sum": "{a} + {b} = {r}", "difference": "{hi} - {lo} = {r}", "product": "{a} * {b} = {r}",
       "larger": "{hi} is larger than {lo}, so the larger digit is {r}"}
_ASK = {"sum": "their sum", "difference": "the larger digit minus the smaller one", "product": "their product",
        "larger": "the larger digit"}


def solution(qtype: str, left: int, right: int, style: int, result: str | None = None) -> str:
    """A worked solution; ``style`` 0 (short) .. 2 (long, with a check); ``result`` overrides the answer."""
    r = result if result is not None else gold_answer(qtype, left, right)
    hi, lo = max(left, right), min(left, right)
    op = _OP[qtype].format(a=left, b=right, hi=hi, lo=lo, r=r)
    seen = f"The left digit is {left} and the right digit is {right}."
    if style == 0:
        return f"{seen} {op}. The answer is \\boxed{{{r}}}."
    if style == 1:
        return f"I look at the image. {seen} The question asks for {_ASK[qtype]}. {op}. So the answer is \\boxed{{{r}}}."
    return (f"Let me think step by step. I see two handwritten digits. {seen} The question asks for {_ASK[qtype]}. "
            f"{op}. Let me check the digits again: {left} on the left, {right} on the right. "
            f"Therefore the final answer is \\boxed{{{r}}}.")


def synth_example(rng: np.random.Generator, noise: float) -> tuple[str, str, str, str]:
    """(prompt, target, gold, qtype) of one synthetic example."""
    left, right = (int(x) for x in rng.integers(0, 10, size=2))
    qtype = QTYPES[int(rng.integers(len(QTYPES)))]
    caption = describe(left, right)
    if rng.random() < 0.3:
        caption = "The image shows two handwritten digits side by side. " + caption
    gold = gold_answer(qtype, left, right)
    result = gold
    if rng.random() < noise:
        result = str(max(0, int(gold) + int(rng.choice([-2, -1, 1, 2]))))
    return local_prompt(caption, QUESTIONS[qtype]), solution(qtype, left, right, int(rng.integers(3)), result), gold, qtype


def build_model(seed: int, hidden: int, layers: int):
    """Tokenizer + randomly initialised ``Qwen2ForCausalLM`` (tied embeddings)."""
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision / torchaudio when installed
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from verl.models.tiny import build_tokenizer

    tok = build_tokenizer("qwen2_5_vl")
    cfg = Qwen2Config(vocab_size=((len(tok) + 63) // 64) * 64, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               do_sample=False, max_new_tokens=64)
    return tok, model


def batch_tensors(tok, examples: list[tuple[str, str, str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded prompt+target ids with labels on the target (and end-of-turn) tokens only."""
    seqs, labels = [], []
    for prompt, target, _, _ in examples:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(" " + target + tok.eos_token, add_special_tokens=False)["input_ids"]
        seqs.append(p + t)
        labels.append([-100] * len(p) + t)
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), L), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels)):
        ids[i, :len(s)], lab[i, :len(s)], att[i, :len(s)] = torch.tensor(s), torch.tensor(lb), 1
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def evaluate_reasoner(path: str | Path, n_items: int = 200, seed: int = 12345) -> dict[str, float]:
    """Greedy and sampled (T=0.8, 4 samples) accuracy on fresh synthetic items with clean descriptions."""
    rng = np.random.default_rng(seed)
    items = [synth_example(rng, 0.0) for _ in range(n_items)]
    r = LocalReasoner(path, trust_remote_code=False)  # the folder pretrain() wrote
    out: dict[str, float] = {}
    for name, s in (("greedy", Sampling(n=1, temperature=0.0, max_new_tokens=96)),
                    ("sampled_t0.8", Sampling(n=4, temperature=0.8, max_new_tokens=96))):
        texts = []
        for i in range(0, n_items, 100):
            texts.extend(r.generate([it[0] for it in items[i:i + 100]], Sampling(**{**s.__dict__, "seed": i})))
        texts = [list(t) for t in texts]
        acc = [[reasoning_reward(t, it[2]) for t in ts] for ts, it in zip(texts, items)]
        out[name] = float(np.mean(acc))
        for q in QTYPES:
            out[f"{name}/{q}"] = float(np.mean([a for a, it in zip(acc, items) if it[3] == q]))
    return out


def _stamp(a: argparse.Namespace) -> dict:
    return {k: getattr(a, k) for k in ("steps", "batch_size", "lr", "seed", "noise", "hidden", "layers")}


def pretrain(a: argparse.Namespace) -> Path:
    """Train and save (or reuse) the reasoner; returns its folder."""
    out = Path(a.out)
    stamp = _stamp(a)
    if up_to_date_or_cleared(out, stamp, "reasoner"):
        return out
    tok, model = build_model(a.seed, a.hidden, a.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.05)
    rng = np.random.default_rng(a.seed)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        batch = batch_tensors(tok, [synth_example(rng, a.noise) for _ in range(a.batch_size)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step == 1 or step % 100 == 0 or step == a.steps:
            logger.info("step %d/%d loss %.4f (%.0f s)", step, a.steps, loss.item(), time.perf_counter() - t0)
    train_s = time.perf_counter() - t0
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    report = {"train_seconds": round(train_s, 1), "args": stamp, "parameters": sum(p.numel() for p in model.parameters()),
              "eval": evaluate_reasoner(out, a.eval_items)}
    logger.info("reasoner report: %s", report)
    write_json(out / "report.json", report)
    write_stamp(out, stamp)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="checkpoints/sophia/reasoner")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (not part of the cache stamp)")
    p.add_argument("--noise", type=float, default=0.05, help="share of targets with a wrong result")
    p.add_argument("--eval-items", type=int, default=200, help="synthetic items in report.json")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    return run_pretrain_cli(parse_args, pretrain, argv)


if __name__ == "__main__":
    main()
