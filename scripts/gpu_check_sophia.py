"""SOPHIA mode of the GPU check (``bash scripts/gpu_check.sh --mode sophia``): one round at the Qwen2.5-VL-3B
policy shape in one process (``trainer.backend=local``, HF engine, no Ray / vLLM / network), with the tiny
local reasoner, printing seconds per stage and peak memory.

caption (K = ``--votes`` captions per image) -> reason (the tiny text reasoner, random weights, in its worker
group; N = 2 per caption) -> reward -> select -> update (reward-weighted NLL through the FSDP2 actor, vision
tower frozen, gradient checkpointing) -> evaluate (greedy, base and updated). A random-weight reasoner never
answers right and would leave nothing to train on, so each of its reasonings is followed by the gold option
(``\\boxed{X}``): the check measures the cost of the stages, not SOPHIA's accuracy.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any


class GoldEnding:
    """Wraps a reasoner: each reasoning ends with the gold answer of its question (the check's stand-in)."""

    def __init__(self, inner: Any, gold: dict[str, str]) -> None:
        self.inner, self.gold = inner, gold

    @property
    def calls(self) -> int:
        return self.inner.calls

    def reason(self, items, sampling):
        out = self.inner.reason(items, sampling)
        return [[f"{t} \\boxed{{{self.gold[it.key.split('|')[0]]}}}" for t in texts]
                for it, texts in zip(items, out)]

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


class Recorder:
    """The tracker the pipeline logs to: keeps every metric (no files, no plotting libraries)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log(self, metrics: dict, step: int) -> dict:
        self.metrics.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        return metrics

    def summary(self, summary: dict) -> None:
        pass


def run(args: argparse.Namespace, summary: dict, folder: Path, data: Path) -> dict:
    """One SOPHIA round on the policy ``folder`` and the questions ``data``; adds its figures to ``summary``."""
    import torch

    from recipes.sophia.config import load_sophia_config
    from recipes.sophia.pipeline import run_pipeline
    from recipes.sophia.pretrain_reasoner import build_model
    from recipes.sophia.reasoner_group import ReasonerGroup
    from recipes.sophia.stages import questions_of

    work = Path(args.work_dir).resolve()
    tok, model = build_model(seed=0, hidden=64, layers=1)
    model.save_pretrained(work / "reasoner", safe_serialization=True)
    tok.save_pretrained(work / "reasoner")
    dtype = "float32" if args.small else "bfloat16"
    cfg = load_sophia_config(overrides=[
        f"data.dir={data.parent}", f"data.train_file={data.name}", f"data.eval_file={data.name}",
        f"actor_rollout_ref.model.path={folder}", f"reason.model_path={work / 'reasoner'}",
        f"trainer.log_dir={work / 'logs'}", "trainer.logger=[console]", "trainer.experiment_name=gpu_check_sophia",
        f"trainer.device={args.device}", "actor_rollout_ref.rollout.name=hf", f"actor_rollout_ref.model.dtype={dtype}",
        f"actor_rollout_ref.actor.fsdp.param_dtype={dtype}", "actor_rollout_ref.model.enable_gradient_checkpointing=true",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={args.max_tokens}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}", "trainer.total_epochs=1",
        "caption.prompt=detailed", f"caption.k={args.votes}", f"caption.max_new_tokens={args.response_len}",
        "reason.n=2", f"reason.max_new_tokens={args.response_len}", "select.alpha=0.0",
        f"update.max_response_tokens={4 * args.response_len}", f"eval.max_new_tokens={args.response_len}"])
    gold = {q.uid: q.gold for q in questions_of(cfg, "train")}
    tracker = Recorder()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = run_pipeline(cfg, reasoner=lambda: GoldEnding(ReasonerGroup(cfg, cfg.run_path), gold), tracker=tracker)
    stages = {k.split("/", 1)[1]: v for k, v in tracker.metrics.items() if k.startswith("timing_s/")}
    summary.update({"sophia_stages_s": stages, "sophia_round_s": time.perf_counter() - t0,
                    "sophia_kept_fraction": out["sophia/kept_fraction"], "sophia_update": out["update"],
                    "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
                    "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if args.device == "cuda" else None,
                    "peak_host_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})
    return summary


def print_summary(s: dict) -> None:
    rs = s["real_shape"]
    print(f"\n=== gpu_check (sophia) on {s['device']}: Qwen2.5-VL-3B shape, {rs['layers']}/{rs['published_layers']} "
          f"text layers, {rs['dtype']} (built in {s['build_s']:.1f} s) ===")
    print("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in s["sophia_stages_s"].items()))
    print(f"round: {s['sophia_round_s']:.1f} s; kept {100 * s['sophia_kept_fraction']:.0f} % of the questions; "
          f"update {json.dumps(s['sophia_update'])}")
    if s["peak_memory_gib"] is not None:
        print(f"peak memory: {s['peak_memory_gib']:.1f} GiB allocated, {s['peak_reserved_gib']:.1f} GiB reserved")
    print(f"peak host memory (RSS): {s['peak_host_rss_gib']:.1f} GiB")
    print(f"ray imported: {s['ray_imported']}, vllm imported: {s['vllm_imported']}")
