"""Plain evaluation of a model folder on TTRV-format files: greedy accuracy, mean@N, maj@N.

    python -m recipes.ttrv.evaluate --model checkpoints/tiny_base/qwen2_5_vl \
        --files data/digits/test_noise_mc.json data/digits/test_blur_mc.json --n 8

Greedy = one greedy answer per item (plain per-item accuracy); mean@N = mean accuracy of N samples at
temperature 1.0; maj@N = accuracy of their majority answer (invalid answers never vote).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from verl.data.formats import Record, load_records
from verl.rewards.answers import INVALID, extract_answer, normalize_ground_truth
from verl.rewards.metrics import maj_at_n, mean_at_n
from verl.workers.rollout.base import SamplingSpec
from verl.workers.rollout.generate import generate_texts


def score(answers: list[list[str]], records: list[Record]) -> dict[str, float]:
    """Metrics of per-record answer lists (greedy lists have one answer): accuracy and invalid ratio."""
    gts = [normalize_ground_truth(r.ground_truth, r.options or None) for r in records]
    flat = [a for group in answers for a in group]
    out = {"mean": mean_at_n(answers, gts), "invalid_ratio": float(np.mean([a == INVALID for a in flat]))}
    if max(len(g) for g in answers) > 1:
        out["maj"] = maj_at_n(answers, gts)
    return out


def _answers(engine, records: list[Record], n: int, greedy: bool, max_new_tokens: int, seed: int,
             batch: int) -> list[list[str]]:
    spec = SamplingSpec(n=n, temperature=0.0 if greedy else 1.0, top_k=-1, max_new_tokens=max_new_tokens, seed=seed)
    texts = generate_texts(engine.generate, [r.prompt for r in records], [r.images for r in records], spec,
                           batch_size=batch, uids=[r.uid for r in records])
    return [[extract_answer(t, r.options or None) for t in ts] for r, ts in zip(records, texts)]


def evaluate(model: str | Path, files: list[str | Path], n: int = 8, rollout: str = "hf", max_new_tokens: int = 8,
             seed: int = 0, batch: int = 64, max_samples: int = -1) -> dict[str, dict[str, float]]:
    """``{file stem: {greedy, mean@N, maj@N, invalid_ratio, n_items}}`` for each file."""
    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.workers.rollout import make_rollout

    engine = make_rollout(RolloutConfig(name=rollout), ModelConfig(path=str(model), dtype="float32"), device="cpu",
                          seed=seed)
    results: dict[str, dict[str, float]] = {}
    for f in files:
        records = load_records([f])
        if max_samples > 0:
            records = records[:max_samples]
        greedy = score(_answers(engine, records, 1, True, max_new_tokens, seed, batch), records)
        row = {"greedy": greedy["mean"], "invalid_ratio": greedy["invalid_ratio"], "n_items": len(records)}
        if n > 1:
            sampled = score(_answers(engine, records, n, False, max_new_tokens, seed, batch), records)
            row[f"mean@{n}"], row[f"maj@{n}"] = sampled["mean"], sampled["maj"]
        results[Path(f).stem] = row
    return results


def format_results(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table, accuracies in percent."""
    lines = []
    for name, row in results.items():
        cells = [f"{k}={100 * v:.1f}" if k != "n_items" else f"items={int(v)}" for k, v in row.items()]
        lines.append(f"{name:24s} " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--rollout", default="hf", choices=("hf", "vllm", "auto"))
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--max-samples", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    res = evaluate(a.model, a.files, a.n, a.rollout, a.max_new_tokens, a.seed, max_samples=a.max_samples)
    print(format_results(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
