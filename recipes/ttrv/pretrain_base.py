"""Pretrain the tiny base VLM that TTRV adapts: supervised fine-tuning on the clean digits train split.

    python -m recipes.ttrv.pretrain_base --arch qwen2_5_vl --data data/digits --out checkpoints/tiny_base/qwen2_5_vl

Builds a tiny offline model (``verl.models.tiny``), trains it on the clean labeled ``train`` split
(open style by default) with the answer followed by the end-of-turn token as the target, and saves a standard Hugging Face folder (loads with ``load_vlm`` and vLLM). It
never sees a shifted image. Open answers are phrased (``--answer-form phrasings``, default): every time an
example is drawn its target is one of its digit's surface forms (:func:`verl.data.digits.answer_phrasings`),
drawn evenly, so the base answers in varied forms as a real VLM does; ``--answer-form digit`` is the
older single-token base (answer = the digit). The folder is cached: a ``pretrain_stamp.json`` with the arguments makes a
second call with the same arguments a no-op. At the end it evaluates clean val, the dev shift and each
test shift (greedy, mean@N, maj@N) into ``pretrain_report.json``, with a check of the base's own sampled
outputs on the dev shift against the answer extractor (share read as a digit, invalid ratio), and the regime
check at TTRV's vote budget (``--votes``, 32): base maj@votes against base greedy on the dev shift, which must
be above greedy for TTRV to have something to turn into greedy accuracy (a warning says when it is not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from verl.data.digits import answer_phrasings
from verl.data.formats import Record, load_records
from verl.models.family import FAMILIES
from verl.models.multimodal import build_prompt_inputs, pad_id_of

logger = logging.getLogger("recipes.ttrv.pretrain_base")
STAMP = "pretrain_stamp.json"
REPORT = "pretrain_report.json"
MAX_NEW_TOKENS = 10  # the longest phrasing with its end-of-turn token is 7 tokens
REPORT_SPLITS = ("val", "dev_elastic", "test_noise", "test_blur", "test_rotate", "test_invert", "test_occlude")


def sft_batch(processor, records: list[Record], cache: dict, answers: list[str] | None = None) -> dict:
    """Left-padded prompt + right-padded target (answer + end of turn) for ``records``, image inputs once
    per distinct image (cached across steps), and ``prompt_index`` mapping rows to them.

    ``answers`` (one per record) replace the records' ground truths as target texts."""
    tok = processor.tokenizer
    end = tok.eos_token or "<|im_end|>"
    answers = [str(r.ground_truth) for r in records] if answers is None else answers
    if len(answers) != len(records):
        raise ValueError(f"sft_batch: {len(answers)} answers for {len(records)} records")
    prompts, targets, images, pidx, keys = [], [], [], [], {}
    for r, answer in zip(records, answers):
        key = (r.uid, str(r.images[0]) if r.images else "")
        if key not in cache:
            built = build_prompt_inputs(processor, r.prompt, r.images)
            cache[key] = built
        built = cache[key]
        prompts.append(built["input_ids"])
        targets.append(torch.tensor(tok(f"{answer}{end}", add_special_tokens=False)["input_ids"]))
        img_key = key[1]
        if img_key not in keys:
            keys[img_key] = len(images)
            images.append({k: v for k, v in built.items() if k in ("pixel_values", "image_grid_thw")})
        pidx.append(keys[img_key])
    pad = pad_id_of(processor)
    P, R = max(len(p) for p in prompts), max(len(t) for t in targets)
    ids = torch.full((len(records), P + R), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros((len(records), R))
    for i, (p, t) in enumerate(zip(prompts, targets)):
        ids[i, P - len(p):P], attn[i, P - len(p):P] = p, 1
        ids[i, P:P + len(t)], attn[i, P:P + len(t)], mask[i, :len(t)] = t, 1, 1
    return {"input_ids": ids, "attention_mask": attn, "response_mask": mask, "R": R, "images": images,
            "prompt_index": pidx}


def sft_loss(model, batch: dict) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens."""
    from verl.models.vlm_forward import response_log_probs

    lp, _ = response_log_probs(model, batch["input_ids"], batch["attention_mask"], batch["R"], batch["images"],
                               batch["prompt_index"])
    m = batch["response_mask"]
    return -(lp * m).sum() / m.sum()


def _stamp(args: argparse.Namespace) -> dict:
    keys = ("arch", "steps", "batch_size", "lr", "seed", "styles", "answer_form")
    d = {k: getattr(args, k) for k in keys}
    d["data_manifest"] = hashlib.sha256((Path(args.data) / "manifest.json").read_bytes()).hexdigest()[:16]
    return d


def target_text(record: Record, answer_form: str, rng: np.random.Generator) -> str:
    """The SFT target of one drawn example: the letter (multiple choice), the digit, or a random phrasing."""
    if record.options or answer_form == "digit":
        return str(record.ground_truth)
    forms = answer_phrasings(int(record.ground_truth))
    return forms[int(rng.integers(len(forms)))]


def pretrain(args: argparse.Namespace) -> Path:
    """Train and save (or reuse) the base model; returns its folder."""
    from verl.models.load import load_vlm
    from verl.models.tiny import build_tiny_vlm

    out, data = Path(args.out), Path(args.data)
    stamp = _stamp(args)
    if (out / STAMP).is_file() and json.loads((out / STAMP).read_text()) == stamp:
        logger.info("base model in %s is up to date (same arguments); nothing to do", out)
        return out
    if out.exists():
        shutil.rmtree(out)
    torch.manual_seed(args.seed)
    build_tiny_vlm(args.arch, out, seed=args.seed)
    model, processor = load_vlm(out, dtype=torch.float32, device="cpu")
    records = [r for style in args.styles for r in load_records([data / f"train_{style}.json"])]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    rng = np.random.default_rng(args.seed)
    cache: dict = {}
    model.train()
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        drawn = [records[i] for i in rng.choice(len(records), size=args.batch_size, replace=False)]
        answers = [target_text(r, args.answer_form, rng) for r in drawn]
        loss = sft_loss(model, sft_batch(processor, drawn, cache, answers))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == 1:
            logger.info("step %d/%d loss %.4f (%.0f s)", step, args.steps, loss.item(), time.perf_counter() - t0)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    train_s = time.perf_counter() - t0
    report = {"train_seconds": round(train_s, 1), "args": stamp}
    if args.eval_n > 0:
        report["eval"] = evaluate_base(out, data, args.eval_n, args.eval_max, args.styles)
        report["dev_outputs"] = output_check(out, data / "dev_elastic_open.json", args.eval_n, args.eval_max)
        if args.votes > 0 and "open" in args.styles:
            report["dev_regime"] = regime_check(out, data / "dev_elastic_open.json", args.votes, args.eval_max)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return out


def evaluate_base(model: Path, data: Path, n: int, max_samples: int, styles: list[str]) -> dict:
    """Greedy / mean@N / maj@N on clean val, the dev shift and every test shift, in the trained styles."""
    from recipes.ttrv.evaluate import evaluate, format_results

    files = [data / f"{s}_{st}.json" for st in styles for s in REPORT_SPLITS if (data / f"{s}_{st}.json").is_file()]
    res = evaluate(model, files, n=n, max_samples=max_samples, max_new_tokens=MAX_NEW_TOKENS)
    logger.info("base model:\n%s", format_results(res))
    return res


def regime_check(model: Path, file: Path, votes: int, max_samples: int) -> dict:
    """Base greedy vs maj@``votes`` on the dev shift: the self-consistency regime holds when the majority wins."""
    from recipes.ttrv.evaluate import evaluate

    r = evaluate(model, [file], n=votes, max_samples=max_samples, max_new_tokens=MAX_NEW_TOKENS)[file.stem]
    out = {"split": file.stem, "votes": votes, "greedy": r["greedy"], f"maj@{votes}": r[f"maj@{votes}"],
           f"mean@{votes}": r[f"mean@{votes}"], "majority_minus_greedy": round(r[f"maj@{votes}"] - r["greedy"], 4)}
    out["self_consistency_regime"] = out["majority_minus_greedy"] > 0
    log = logger.info if out["self_consistency_regime"] else logger.warning
    log("dev regime (%s, %d votes): greedy %.1f, maj@%d %.1f (%+.1f)%s", file.stem, votes, 100 * r["greedy"], votes,
        100 * r[f"maj@{votes}"], 100 * out["majority_minus_greedy"],
        "" if out["self_consistency_regime"] else ": NOT above greedy, TTRV has little to turn into greedy accuracy")
    return out


def output_check(model: Path, file: Path, n: int, max_samples: int) -> dict:
    """The base's own sampled answers (``n`` per item, temperature 1) read by the answer extractor: share
    read as a digit, invalid ratio, share in a training phrasing, and the most frequent unread outputs."""
    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.rewards.answers import INVALID, extract_answer
    from verl.workers.rollout import make_rollout
    from verl.workers.rollout.base import SamplingSpec
    from verl.workers.rollout.generate import generate_texts

    records = load_records([file])[:max_samples]
    engine = make_rollout(RolloutConfig(name="hf"), ModelConfig(path=str(model), dtype="float32"), device="cpu", seed=0)
    spec = SamplingSpec(n=n, temperature=1.0, top_k=-1, max_new_tokens=MAX_NEW_TOKENS, seed=0)
    per_item = generate_texts(engine.generate, [r.prompt for r in records], [r.images for r in records], spec,
                              batch_size=64, uids=[r.uid for r in records])
    texts = [t for ts in per_item for t in ts]
    return phrasing_stats(texts, extract_answer, INVALID)


def phrasing_stats(texts: list[str], extract, invalid: str) -> dict:
    """Counts over raw output texts: read as a digit 0-9, invalid, exactly a training phrasing, forms seen."""
    from collections import Counter

    from verl.rewards.answers import strip_special_tokens

    known = {f for d in range(10) for f in answer_phrasings(d)}
    clean = [strip_special_tokens(t).strip() for t in texts]
    answers = [extract(t, None) for t in texts]
    unread = Counter(c for c, a in zip(clean, answers) if a not in {str(d) for d in range(10)})
    n = max(len(texts), 1)
    return {"n_outputs": len(texts),
            "read_as_digit": sum(a in {str(d) for d in range(10)} for a in answers) / n,
            "invalid_ratio": sum(a == invalid for a in answers) / n,
            "training_phrasing": sum(c in known for c in clean) / n,
            "distinct_forms": len(set(clean)),
            "top_unread": unread.most_common(5)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="qwen2_5_vl", choices=sorted(FAMILIES))
    p.add_argument("--data", default="data/digits")
    p.add_argument("--out", default="checkpoints/tiny_base/qwen2_5_vl")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    # open style (answer = digit) by default: at ~1M parameters the model does not learn to map a digit to
    # its option letter (MC stays at chance after 1,000 steps; see README), while it does learn to read digits
    p.add_argument("--styles", nargs="+", default=["open"], choices=("mc", "open"))
    p.add_argument("--answer-form", default="phrasings", choices=("phrasings", "digit"),
                   help="open-answer targets: a random phrasing of the digit per drawn example, or the digit only")
    p.add_argument("--eval-n", type=int, default=8, help="samples for mean@N / maj@N in the report (0: no report)")
    p.add_argument("--eval-max", type=int, default=200, help="items per split in the report")
    p.add_argument("--votes", type=int, default=32, help="TTRV's vote budget for the dev regime check (0: none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    return pretrain(parse_args(argv))


if __name__ == "__main__":
    main()
