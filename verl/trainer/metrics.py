"""Metric assembly for the controller loop (names follow verl / TTRL conventions).

Only :func:`validation_metrics` (and a method's own ``metrics``, e.g. TTRV's: recipes/ttrv/method.py) reads
ground-truth labels; they report them and feed nothing back into training.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from verl.protocol import DataProto
from verl.rewards import metrics as label_metrics
from verl.rewards.answers import INVALID, normalize_ground_truth
from verl.rewards.voting import answer_entropy


def _stats(prefix: str, x: torch.Tensor | np.ndarray) -> dict[str, float]:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.numel() == 0:
        return {}
    return {f"{prefix}/mean": float(x.mean()), f"{prefix}/max": float(x.max()), f"{prefix}/min": float(x.min())}


def mean_over_workers(per_worker: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average each metric over the data-parallel workers."""
    acc: dict[str, list[float]] = defaultdict(list)
    for m in per_worker:
        for k, v in m.items():
            acc[k].append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def batch_metrics(batch: DataProto, timing: dict[str, float]) -> dict[str, float]:
    """critic/*, response_length/*, perf/* over the training batch."""
    mask = batch.batch["response_mask"]
    resp_len = mask.sum(-1).float()
    prompt_len = batch.batch["attention_mask"][:, : batch.batch["prompts"].shape[1]].sum(-1).float()
    seq_scores = batch.batch["token_level_scores"].sum(-1)
    valid_adv = torch.masked_select(batch.batch["advantages"], mask.bool())
    out = {
        **_stats("critic/score", seq_scores),  # = critic/rewards of verl: no KL penalty in the reward here
        **_stats("critic/advantages", valid_adv),
        **_stats("response_length", resp_len),
        **_stats("prompt_length", prompt_len),
        "response_length/clip_ratio": float((resp_len >= mask.shape[1]).float().mean()),
    }
    n_tokens = float(batch.batch["attention_mask"].sum())
    step_s = timing.get("timing_s/step")
    out["perf/total_num_tokens"] = n_tokens
    if step_s:
        out["perf/throughput"] = n_tokens / step_s
    if "rollout_log_probs" in batch.batch and "old_log_probs" in batch.batch:
        # rollout engine vs actor on the same weights (after the last sync): should agree closely
        diff = torch.masked_select((batch.batch["rollout_log_probs"] - batch.batch["old_log_probs"]).abs(), mask.bool())
        if diff.numel():
            out["training/rollout_probs_diff_max"] = float(diff.max())
            out["training/rollout_probs_diff_mean"] = float(diff.mean())
    if "entropys" in batch.batch:
        ent = torch.masked_select(batch.batch["entropys"], mask.bool())
        out["actor/entropy_rollout"] = float(ent.mean()) if ent.numel() else 0.0
    return out


def normalized_labels(records: Sequence) -> dict[str, str]:
    """``uid -> canonical ground truth`` (the form :func:`extract_answer` produces) of labeled records.

    A ground truth that cannot be mapped onto the record's options is an error naming the record.
    """
    out: dict[str, str] = {}
    for r in records:
        if r.ground_truth is None:
            continue
        try:
            out[r.uid] = normalize_ground_truth(r.ground_truth, r.options or None)
        except ValueError as exc:
            raise ValueError(f"{r.where()}: {exc}") from exc
    return out


def _answers_by_prompt(data: DataProto) -> dict[str, tuple[str, list[str]]]:
    """``uid -> (data_source, [answers])`` in first-appearance order."""
    out: dict[str, tuple[str, list[str]]] = {}
    nt = data.non_tensor_batch
    for uid, src, ans in zip(nt["uid"], nt["data_source"], nt["answer"]):
        out.setdefault(str(uid), (str(src), []))[1].append(str(ans))
    return out


def validation_metrics(
    greedy: DataProto, sampled: DataProto | None, labels: dict[str, str], n: int
) -> dict[str, float]:
    """``val-core/<data_source>/acc/mean@1`` (greedy, plain per-item), ``.../acc/mean@N`` and ``.../acc/maj@N``."""
    out: dict[str, float] = {}
    for name, data in (("greedy", greedy), ("sampled", sampled)):
        if data is None:
            continue
        by_src: dict[str, tuple[list[list[str]], list[str]]] = defaultdict(lambda: ([], []))
        for uid, (src, answers) in _answers_by_prompt(data).items():
            if uid in labels:
                by_src[src][0].append(answers)
                by_src[src][1].append(labels[uid])
        for src, (answers, gts) in by_src.items():
            if name == "greedy":
                out[f"val-core/{src}/acc/mean@1"] = label_metrics.mean_at_n(answers, gts)
            else:
                out[f"val-core/{src}/acc/mean@{n}"] = label_metrics.mean_at_n(answers, gts)
                out[f"val-core/{src}/acc/maj@{n}"] = label_metrics.maj_at_n(answers, gts)
    inv = [a == INVALID for a in greedy.non_tensor_batch["answer"]]
    out["val/invalid_ratio"] = float(np.mean(inv)) if inv else 0.0
    if sampled is not None:
        ent = [answer_entropy(a) for _, a in _answers_by_prompt(sampled).values()]
        out["val/answer_entropy"] = float(np.mean(ent)) if ent else 0.0
    return out


def base_vs_adapted(base: dict[str, float], adapted: dict[str, float]) -> dict[str, float]:
    """Summary with ``base/<key>``, ``adapted/<key>`` and ``delta/<key>`` for every accuracy key."""
    out: dict[str, float] = {}
    for k, v in adapted.items():
        if "/acc/" not in k:
            continue
        out[f"adapted/{k}"] = v
        if k in base:
            out[f"base/{k}"] = base[k]
            out[f"delta/{k}"] = v - base[k]
    return out
