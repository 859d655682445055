"""The SOPHIA pipeline: one round of semi-off-policy collection, then one update, then evaluation.

    python -m recipes.sophia.pipeline [--config recipes/sophia/config/sophia_cpu_tiny.yaml] [key=value ...]

Stages (``trainer.stages``; see :mod:`recipes.sophia.stages`): caption -> reason -> reward -> select ->
update -> evaluate. Stage files live in the run folder (``trainer.run_dir``, default
``<log_dir>/<project>/<experiment>``, i.e. ``logs/sophia/<experiment>/``) next to the Tracker's
``metrics.jsonl`` / ``config.yaml`` / ``summary.json``; plots go to ``plots/``. Re-running the same command
skips finished work; a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipes.sophia import stages as S
from recipes.sophia.config import (
    SophiaConfig,
    load_sophia_config,
    to_dict,
    vlm_model_config,
    vlm_rollout_config,
)

logger = logging.getLogger("recipes.sophia.pipeline")


def _rollout_factory(cfg: SophiaConfig) -> Callable[[str], Any]:
    def make(path: str) -> Any:
        from verl.workers.rollout import make_rollout

        return make_rollout(vlm_rollout_config(cfg), vlm_model_config(cfg, path), device="cpu", seed=cfg.trainer.seed)

    return make


def _length_fn(cfg: SophiaConfig) -> Callable[[str], int] | None:
    if cfg.select.length_unit != "tokens":
        return None
    from verl.models.load import load_processor

    tok = getattr(load_processor(cfg.caption.model_path, trust_remote_code=cfg.caption.trust_remote_code),
                  "tokenizer", None)
    if tok is None:
        raise ValueError(f"select.length_unit=tokens: no tokenizer in {cfg.caption.model_path}")
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def run_pipeline(cfg: SophiaConfig, *, caption_engine: Callable[[], Any] | None = None,
                 reasoner: Callable[[], Any] | None = None, eval_engine: Callable[[str], Any] | None = None,
                 tracker: Any = None) -> dict[str, Any]:
    """Run the configured stages; returns the summary. The factories replace the configured engines (tests)."""
    import torch

    from recipes.sophia.reasoners import make_reasoner
    from verl.logging.tracker import Tracker

    torch.set_num_threads(cfg.trainer.threads)
    run = cfg.run_path
    run.mkdir(parents=True, exist_ok=True)
    own_tracker = tracker is None
    if own_tracker:
        tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, backends=cfg.trainer.logger,
                          log_dir=cfg.trainer.log_dir, config=to_dict(cfg))
    todo = set(cfg.trainer.stages)
    rollout = eval_engine or _rollout_factory(cfg)
    cap_engine = caption_engine or (lambda: rollout(cfg.caption.model_path))
    backend = reasoner or (lambda: make_reasoner(cfg.reason, run / "reasoner_cache.sqlite", cfg.trainer.seed))
    data_dir = Path(cfg.data.dir)
    summary: dict[str, Any] = {"run_dir": str(run)}
    timing: dict[str, float] = {}
    try:
        collect = {"caption", "reason", "reward", "select"} & todo
        if collect:
            train_q = S.load_questions(data_dir / cfg.data.train_file, cfg.data.max_train)
            t0 = time.perf_counter()
            captions = S.caption_stage(cfg, train_q, run, cap_engine)
            timing["timing_s/caption"] = time.perf_counter() - t0
            metrics: dict[str, Any] = {}
            if {"reason", "reward", "select"} & todo:
                t0 = time.perf_counter()
                rs = S.reason_stage(cfg, train_q, captions, run, backend)
                timing["timing_s/reason"] = time.perf_counter() - t0
                metrics.update({"sophia/reason_failed": rs["failed"], "sophia/reason_calls": rs["calls"]})
                if {"reward", "select"} & todo:
                    rewards = S.reward_stage(train_q, rs["rows"], run)
                    metrics.update(S.reward_metrics(cfg, train_q, captions, rewards))
                    if "select" in todo:
                        t0 = time.perf_counter()
                        sel = S.select_stage(cfg, train_q, captions, rs["rows"], rewards, run, _length_fn(cfg))
                        timing["timing_s/select"] = time.perf_counter() - t0
                        metrics.update(sel["stats"])
            tracker.log({**metrics, **timing}, step=0)
            summary.update({k: v for k, v in metrics.items() if not k.startswith("sophia/caption_reward_hist/")})
        eval_q = S.load_questions(data_dir / cfg.data.eval_file, cfg.data.max_eval) if "evaluate" in todo else []
        if "evaluate" in todo and cfg.eval.base:
            base = S.evaluate_stage(cfg, eval_q, cfg.caption.model_path, "base", run, rollout)
            tracker.log(base, step=0)
            summary.update(base)
        if "update" in todo:
            t0 = time.perf_counter()
            train_q = S.load_questions(data_dir / cfg.data.train_file, cfg.data.max_train)
            info = S.update_stage(cfg, train_q, run, tracker)
            tracker.log({"timing_s/update": time.perf_counter() - t0}, step=info["steps"])
            summary["update"] = info
        if "evaluate" in todo and (run / "model" / "model.safetensors").is_file():
            after = S.evaluate_stage(cfg, eval_q, run / "model", "sophia", run, rollout)
            steps = summary.get("update", {}).get("steps", 1)
            tracker.log(after, step=int(steps))
            summary.update(after)
        tracker.summary(summary)
    finally:
        if own_tracker:
            tracker.finish()
    if own_tracker and "jsonl" in cfg.trainer.logger:
        summary["plots"] = [str(p) for p in make_plots(tracker.run_dir, run)]
    return summary


def make_plots(log_run_dir: Path, run: Path) -> list[Path]:
    """Tracker metric plots, the caption-reward histogram and before/after accuracy per question type."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from verl.logging.plots import plot_run

    out = run / "plots"
    written = list(plot_run(log_run_dir / "metrics.jsonl", out)) if (log_run_dir / "metrics.jsonl").is_file() else []
    sel = run / "selection.json"
    if sel.is_file():
        hist = json.loads(sel.read_text())["caption_reward_hist"]
        n = len(hist) - 1
        fig = Figure(figsize=(6, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.bar([f"{k}/{n}" for k in range(n + 1)], hist)
        ax.set_xlabel("caption reward R(c)")
        ax.set_ylabel("captions")
        ax.set_title("caption-reward histogram")
        fig.tight_layout()
        fig.savefig(out / "caption_reward_hist.png")
        written.append(out / "caption_reward_hist.png")
    summ = log_run_dir / "summary.json"
    if summ.is_file():
        s = json.loads(summ.read_text())
        types = sorted({k.rsplit("/", 1)[1] for k in s if k.startswith("eval/base/acc/")})
        if types and any(k.startswith("eval/sophia/acc/") for k in s):
            fig = Figure(figsize=(6, 3.6), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            x = range(len(types) + 1)
            for off, tag in ((-0.2, "base"), (0.2, "sophia")):
                vals = [s.get(f"eval/{tag}/acc", 0.0)] + [s.get(f"eval/{tag}/acc/{t}", 0.0) for t in types]
                ax.bar([i + off for i in x], vals, width=0.4, label=tag)
            ax.set_xticks(list(x), ["all", *types])
            ax.set_ylabel("held-out accuracy (greedy)")
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "accuracy_before_after.png")
            written.append(out / "accuracy_before_after.png")
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file (default: recipes/sophia/config/sophia_cpu_tiny.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. select.alpha=0.5")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_sophia_config(a.config, a.overrides)
    t0 = time.perf_counter()
    s = run_pipeline(cfg)
    base, after = s.get("eval/base/acc"), s.get("eval/sophia/acc")
    kept = s.get("sophia/kept_fraction")
    print(f"run folder: {s['run_dir']}  ({time.perf_counter() - t0:.0f} s)")
    if kept is not None:
        print(f"kept questions: {100 * kept:.1f}%  reasoning accuracy: {100 * s['sophia/reasoning_accuracy']:.1f}%")
    if base is not None and after is not None:
        print(f"held-out VLM accuracy (greedy): base {100 * base:.1f}% -> SOPHIA {100 * after:.1f}%")
    return s


if __name__ == "__main__":
    main()
