"""Label-free rewards compared on one protocol: ``python -m recipes.ttrv.experiments --variant estimators``.

Protocol (a) (adapt on a whole unlabeled shifted split, evaluate on the same split) with every estimator of
:mod:`recipes.ttrv.estimators` and every control of :mod:`recipes.ttrv.controls` (on top of ``ttrv``):

1. on the labeled development shift ``dev_elastic`` only (seed 1): each configuration's learning rate (and,
   for the stopping rule, its threshold) by adapted greedy accuracy; the configuration "chosen on dev" is the
   one with the best dev greedy accuracy;
2. every configuration with its dev-chosen settings on the five shifted test splits x ``seeds`` seeds; seed-1
   runs validate every ``plot_every`` steps for the accuracy-vs-step plot;
3. ``docs/results/estimators.md`` (generated: per split Δ greedy and adapted greedy − base maj@N, per
   configuration the mean and the worst split, the summary line) and ``docs/results/estimators_accuracy_vs_step.png``.

Each run's summary is cached under ``--out/runs/<name>/`` (a re-run does only what is missing).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from recipes.ttrv.grid_runs import SHIFTS, Run, execute_all, split_file

PAGE = Path("docs/results/estimators.md")
PLOT = "estimators_accuracy_vs_step.png"
GOAL_MEAN, GOAL_WORST = 3.0, -1.0


@dataclass(frozen=True)
class Sizes:
    """What one variant of the comparison costs."""

    seeds: int
    max_prompts: int  # first prompts of each split (adaptation = evaluation set)
    n_votes: int  # samples that vote; N of maj@N
    n_train: int
    batch: int  # prompts per step
    epochs: int
    lrs: tuple[float, ...]  # tried on dev per configuration
    stop_ratios: tuple[float, ...]  # stopping-rule thresholds tried on dev (guard majority ratio)
    shifts: tuple[str, ...] = SHIFTS
    plot_every: int = 2


SIZES = {
    "estimators": Sizes(seeds=3, max_prompts=24, n_votes=16, n_train=8, batch=8, epochs=2, lrs=(3e-5, 1e-4),
                        stop_ratios=(0.8, 0.9)),
    # what a shared 2-core machine affords in about an hour: one learning rate (1e-4: 6 steps)
    "estimators-core": Sizes(seeds=3, max_prompts=24, n_votes=16, n_train=8, batch=8, epochs=2, lrs=(1e-4,),
                             stop_ratios=(0.8, 0.9)),
    "estimators-small": Sizes(seeds=1, max_prompts=4, n_votes=4, n_train=2, batch=4, epochs=1, lrs=(1e-4,),
                              stop_ratios=(0.9,), shifts=("noise",), plot_every=1),
}
# configuration -> overrides (the controls act on ttrv); small budgets for the auxiliary rollouts
CONFIGS: dict[str, list[str]] = {
    "ttrv": ["reward.name=ttrv"],
    "self_certainty": ["reward.name=self_certainty"],
    "token_entropy": ["reward.name=token_entropy"],
    "view_vote": ["reward.name=view_vote", "++reward.kwargs.views=4", "++reward.kwargs.votes_per_view=4"],
    "ema_teacher": ["reward.name=ema_teacher", "++reward.kwargs.teacher_votes=8", "++reward.kwargs.decay=0.9"],
    "ttrv + gate [0.3, 0.9]": ["reward.name=ttrv", "++algorithm.method_kwargs.gate_min=0.3",
                               "++algorithm.method_kwargs.gate_max=0.9"],
    "ttrv + soft weight": ["reward.name=ttrv", "++algorithm.method_kwargs.soft_kappa=0.5",
                           "++algorithm.method_kwargs.soft_tau=0.1"],
    "ttrv + stop rule": ["reward.name=ttrv", "trainer.guard.action=rollback", "trainer.guard.window=2"],
}
STOP = "ttrv + stop rule"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").replace("__", "_")


def common(s: Sizes, model: str, seed: int) -> list[str]:
    return [f"actor_rollout_ref.model.path={model}", f"data.max_samples={s.max_prompts}", f"trainer.seed={seed}",
            f"data.seed={seed}", f"actor_rollout_ref.rollout.n_votes={s.n_votes}",
            f"actor_rollout_ref.rollout.n={s.n_train}", f"actor_rollout_ref.rollout.val_sample_n={s.n_votes}",
            f"data.train_batch_size={s.batch}", f"actor_rollout_ref.actor.ppo_mini_batch_size={min(4, s.batch)}",
            "trainer.logger=[jsonl]", "actor_rollout_ref.rollout.name=hf", "trainer.backend=local",
            "trainer.n_gpus_per_node=1", "trainer.save_freq=-1"]


def candidates(config: str, s: Sizes) -> list[tuple[str, list[str]]]:
    """(label, overrides) of the dev settings tried for ``config``."""
    out = []
    for lr in s.lrs:
        extra = [(f"stop at majority ratio {t}", [f"trainer.guard.max_majority_ratio={t}"]) for t in s.stop_ratios] \
            if config == STOP else [("", [])]
        out += [(f"lr {lr:g}" + (f", {label}" if label else ""), [f"actor_rollout_ref.actor.optim.lr={lr}", *ov])
                for label, ov in extra]
    return out


def greedy(summary: dict, kind: str, split: str, metric: str = "mean@1") -> float:
    return float(summary[f"{kind}/val-core/digits_{split}/acc/{metric}"])


def run(s: Sizes, data: Path, model: str, out: Path, jobs: int, variant: str = "estimators") -> str:
    """The whole comparison; returns the generated Markdown (also written to ``out/estimators.md``)."""
    dev = split_file(data, "dev_elastic")
    dev_runs = {(c, label): Run(f"est_dev_{slug(c)}_{slug(label)}", "protocol_a_full",
                                [*common(s, model, 1), *CONFIGS[c], *ov, f"data.train_files=[{dev}]",
                                 f"data.val_files=[{dev}]"], c, "dev_elastic", s.epochs)
                for c in CONFIGS for label, ov in candidates(c, s)}
    dev_res = execute_all(list(dev_runs.values()), out, jobs)
    best: dict[str, tuple[str, list[str], float]] = {}
    for (c, label), r in dev_runs.items():
        acc = greedy(dev_res[r.name], "adapted", "dev_elastic")
        if c not in best or acc > best[c][2]:
            best[c] = (label, [o for o in r.overrides if "optim.lr=" in o or "max_majority_ratio=" in o], acc)
    dev_base = greedy(next(iter(dev_res.values())), "base", "dev_elastic")
    chosen = max(CONFIGS, key=lambda c: best[c][2])  # ties keep the earlier configuration
    grid: dict[tuple[str, str, int], Run] = {}
    for c in CONFIGS:
        for seed in range(1, s.seeds + 1):
            for shift in s.shifts:
                f = split_file(data, f"test_{shift}")
                plot = [f"trainer.test_freq={s.plot_every}"] if seed == 1 else []
                grid[(c, shift, seed)] = Run(f"est_{slug(c)}_{shift}_s{seed}", "protocol_a_full",
                                             [*common(s, model, seed), *CONFIGS[c], *best[c][1], *plot,
                                              f"data.train_files=[{f}]", f"data.val_files=[{f}]"],
                                             c, f"test_{shift}", s.epochs)
    res = execute_all(list(grid.values()), out, jobs)
    md = report(s, best, dev_base, chosen, grid, res, variant)
    plot_png = accuracy_plot(s, grid, out)
    (out / "estimators.md").write_text(md)
    return md if plot_png is None else md + f"\n![greedy accuracy vs step per configuration]({PLOT})\n"


def report(s: Sizes, best: dict, dev_base: float, chosen: str, grid: dict[tuple[str, str, int], Run],
           res: dict[str, dict], variant: str = "estimators") -> str:
    """The generated page: sizes, dev choices, both tables, the summary line and the goal."""
    n = s.n_votes

    def cells(c: str, shift: str) -> tuple[list[float], list[float]]:
        runs = [grid[(c, shift, seed)] for seed in range(1, s.seeds + 1)]
        d = [100 * (greedy(res[r.name], "adapted", r.split) - greedy(res[r.name], "base", r.split)) for r in runs]
        m = [100 * (greedy(res[r.name], "adapted", r.split) - greedy(res[r.name], "base", r.split, f"maj@{n}"))
             for r in runs]
        return d, m

    def fmt(x: list[float]) -> str:
        return f"{statistics.mean(x):+.1f} ± {statistics.stdev(x):.1f}" if len(x) > 1 else f"{x[0]:+.1f}"

    head = "| configuration (chosen on dev) | dev greedy | " + " | ".join(s.shifts) + " | mean | worst split |\n"
    sep = "|---" * (len(s.shifts) + 4) + "|\n"
    t_delta, t_maj, summary = head + sep, head + sep, {}
    for c in CONFIGS:
        per = {sh: cells(c, sh) for sh in s.shifts}
        means_d = [statistics.mean(per[sh][0]) for sh in s.shifts]
        means_m = [statistics.mean(per[sh][1]) for sh in s.shifts]
        summary[c] = (statistics.mean(means_d), min(means_d))
        label = f"{c} ({best[c][0]})"
        t_delta += (f"| {label} | {100 * best[c][2]:.1f} | " + " | ".join(fmt(per[sh][0]) for sh in s.shifts)
                    + f" | {statistics.mean(means_d):+.1f} | {min(means_d):+.1f} |\n")
        t_maj += (f"| {label} | {100 * best[c][2]:.1f} | " + " | ".join(fmt(per[sh][1]) for sh in s.shifts)
                  + f" | {statistics.mean(means_m):+.1f} | {min(means_m):+.1f} |\n")
    mean, worst = summary[chosen]
    met = mean >= GOAL_MEAN and worst >= GOAL_WORST
    best_mean = max(summary, key=lambda c: summary[c][0])
    goal = (f"Goal (mean ≥ +{GOAL_MEAN:.1f}, worst split ≥ {GOAL_WORST:.1f}): **{'met' if met else 'missed'}**."
            + ("" if met else f" Tried: {len(CONFIGS)} configurations ({', '.join(CONFIGS)}), each with "
               f"learning rates {', '.join(f'{lr:g}' for lr in s.lrs)} on dev (the stopping rule also with "
               f"thresholds {', '.join(map(str, s.stop_ratios))}). "
               + ("The configuration dev chose also has the best test mean." if best_mean == chosen else
                  f"The best test mean belongs to {best_mean} ({summary[best_mean][0]:+.1f} mean, "
                  f"{summary[best_mean][1]:+.1f} worst), which dev did not choose.")))
    return (f"<!-- generated by `python -m recipes.ttrv.experiments --variant {variant}`; do not edit -->\n"
            f"Variant `{variant}`. Protocol (a) on the {len(s.shifts)} shifted digits splits, first {s.max_prompts} images each "
            f"(adaptation = evaluation set), {s.seeds} seed(s); {n} votes per image, {s.n_train} of them trained, "
            f"{s.batch} images per step, {s.epochs} epochs; tiny pretrained Qwen2.5-VL base, CPU. Settings chosen "
            f"on `dev_elastic` only (seed 1; base greedy {100 * dev_base:.1f}%). Cells: mean ± std over seeds, "
            f"points; one image of {s.max_prompts} is {100 / s.max_prompts:.1f} points.\n\n**Δ greedy** (adapted − base greedy accuracy)\n\n{t_delta}\n"
            f"**Adapted greedy − base maj@{n}** (the base's majority vote at the same sample budget)\n\n{t_maj}\n"
            f"Label-free rewards, protocol (a): chosen on dev = {chosen} ({best[chosen][0]}): mean Δ greedy = "
            f"{mean:+.1f} points, worst split Δ greedy = {worst:+.1f} points\n\n{goal}\n")


def accuracy_plot(s: Sizes, grid: dict[tuple[str, str, int], Run], out: Path) -> Path | None:
    """Greedy accuracy vs step, mean over the shifted splits (seed-1 runs), one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for c in CONFIGS:
        curves = []
        for shift in s.shifts:
            r = grid[(c, shift, 1)]
            key = f"val-core/digits_{r.split}/acc/mean@1"
            rows = [json.loads(x) for x in (out / "runs" / r.name / "metrics.jsonl").read_text().splitlines()]
            curves.append({int(row["step"]): 100 * row[key] for row in rows if key in row})
        steps = sorted(set.intersection(*(set(cv) for cv in curves)))
        if steps:
            ax.plot(steps, [statistics.mean(cv[st] for cv in curves) for st in steps], marker=".", label=c)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"greedy accuracy (%), mean over {len(s.shifts)} shifted splits, seed 1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = out / PLOT
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return png


def publish(md: str, png: Path, page: Path = PAGE) -> None:
    """Write the generated page and its figure next to it (docs/results/)."""
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(md)
    if png.is_file():
        (page.parent / PLOT).write_bytes(png.read_bytes())
