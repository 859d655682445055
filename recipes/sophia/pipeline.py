"""The SOPHIA pipeline: one round of semi-off-policy collection, then one update, then evaluation.

Run it with ``python -m recipes.sophia.main`` (see there). Stages (``stages``; see :mod:`recipes.sophia.stages`):
caption -> reason -> reward -> select -> update -> evaluate. The policy VLM lives on the framework's worker
group (:class:`recipes.sophia.policy.PolicyGroup`, started on first use): its rollout engine captions and
answers, its FSDP2 actor takes the update. Stage files live in the run folder
(``<trainer.log_dir>/<project>/<experiment>``, i.e. ``logs/sophia/<experiment>/``) next to the Tracker's
``metrics.jsonl`` / ``config.yaml`` / ``summary.json``; plots go to ``plots/``. Re-running the same command
skips finished work; a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipes.sophia import stages as S
from recipes.sophia.config import SophiaConfig
from recipes.sophia.policy import LazyPolicy, PolicyGroup
from recipes.sophia.reasoner_group import ReasonerGroup

logger = logging.getLogger("recipes.sophia.pipeline")


def _length_fn(cfg: SophiaConfig, processor: Callable[[], Any]) -> Callable[[str], int] | None:
    if cfg.select.length_unit != "tokens":
        return None
    tok = getattr(processor(), "tokenizer", None)
    if tok is None:
        raise ValueError(f"select.length_unit=tokens: no tokenizer in {cfg.model_path}")
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def run_pipeline(cfg: SophiaConfig, *, policy: Callable[[], Any] | None = None,
                 reasoner: Callable[[], Any] | None = None, tracker: Any = None) -> dict[str, Any]:
    """Run the configured stages; returns the summary. ``policy`` / ``reasoner`` replace the policy worker
    group and the configured reasoner (tests)."""
    from recipes.sophia.reasoners import make_reasoner
    from verl.logging.tracker import Tracker
    from verl.models.load import load_processor

    run = cfg.run_path
    run.mkdir(parents=True, exist_ok=True)
    own_tracker = tracker is None
    if own_tracker:
        tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, backends=cfg.trainer.logger,
                          log_dir=cfg.trainer.log_dir, config=cfg)
    todo = set(cfg.stages)
    workers = LazyPolicy(policy or (lambda: PolicyGroup(cfg, run)))
    made: list[Any] = []

    def backend() -> Any:  # local: its own worker group, started after the policy workers are released
        if reasoner is not None:
            made.append(reasoner())
        elif cfg.reason.backend == "local":
            workers.close()
            made.append(ReasonerGroup(cfg, run))
        else:
            made.append(make_reasoner(cfg.reason, run / "reasoner_cache.sqlite", cfg.trainer.seed))
        return made[-1]

    loaded: list[Any] = []

    def processor() -> Any:  # the policy's processor: token lengths (select) and update batches
        if not loaded:
            loaded.append(load_processor(cfg.model_path, trust_remote_code=cfg.actor_rollout_ref.model.trust_remote_code))
        return loaded[0]

    summary: dict[str, Any] = {"run_dir": str(run)}
    timing: dict[str, float] = {}

    def base_engine(_path: str) -> Any:
        group = workers.get()
        if group.weights != "base":
            raise RuntimeError("the base evaluation must run before the update in the same process")
        return group

    def updated_engine(_path: str) -> Any:
        group = workers.get()
        S.load_updated(cfg, group)
        return group

    try:
        collect = {"caption", "reason", "reward", "select"} & todo
        if collect:
            train_q = S.questions_of(cfg, "train")
            t0 = time.perf_counter()
            captions = S.caption_stage(cfg, train_q, run, workers.get)
            timing["timing_s/caption"] = time.perf_counter() - t0
            metrics: dict[str, Any] = {}
            if {"reason", "reward", "select"} & todo:
                t0 = time.perf_counter()
                try:
                    rs = S.reason_stage(cfg, train_q, captions, run, backend)
                finally:
                    for b in made:
                        if hasattr(b, "close"):
                            b.close()
                timing["timing_s/reason"] = time.perf_counter() - t0
                metrics.update({"sophia/reason_failed": rs["failed"], "sophia/reason_calls": rs["calls"]})
                if {"reward", "select"} & todo:
                    rewards = S.reward_stage(train_q, rs["rows"], run)
                    metrics.update(S.reward_metrics(cfg, train_q, captions, rewards))
                    if "select" in todo:
                        t0 = time.perf_counter()
                        sel = S.select_stage(cfg, train_q, captions, rs["rows"], rewards, run,
                                             _length_fn(cfg, processor))
                        timing["timing_s/select"] = time.perf_counter() - t0
                        metrics.update(sel["stats"])
            tracker.log({**metrics, **timing}, step=0)
            summary.update({k: v for k, v in metrics.items() if not k.startswith("sophia/caption_reward_hist/")})
        eval_q = S.questions_of(cfg, "eval") if "evaluate" in todo else []
        if "evaluate" in todo and cfg.trainer.val_before_train:
            t0 = time.perf_counter()
            base = S.evaluate_stage(cfg, eval_q, cfg.model_path, "base", run, base_engine)
            tracker.log({**base, "timing_s/evaluate_base": time.perf_counter() - t0}, step=0)
            summary.update(base)
        if "update" in todo:
            t0 = time.perf_counter()
            info = S.update_stage(cfg, S.questions_of(cfg, "train"), run, workers.get, processor, tracker)
            tracker.log({"timing_s/update": time.perf_counter() - t0}, step=info["steps"])
            summary["update"] = info
        if "evaluate" in todo and (run / "model" / "update.json").is_file():
            t0 = time.perf_counter()
            after = S.evaluate_stage(cfg, eval_q, run / "model", "sophia", run, updated_engine)
            steps = summary.get("update", {}).get("steps", 1)
            tracker.log({**after, "timing_s/evaluate_sophia": time.perf_counter() - t0}, step=int(steps))
            summary.update(after)
        tracker.summary(summary)
    finally:
        workers.close()
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


def evaluate_folder(cfg: SophiaConfig, questions: list, model_dir: str | Path, tag: str, run: Path) -> dict[str, float]:
    """Greedy accuracy of another model folder (a baseline's) on the policy workers built from ``cfg``."""
    import copy

    c = copy.deepcopy(cfg)
    c.actor_rollout_ref.model.path = str(model_dir)
    workers = LazyPolicy(lambda: PolicyGroup(c, run))
    try:
        return S.evaluate_stage(c, questions, model_dir, tag, run, lambda _path: workers.get())
    finally:
        workers.close()
