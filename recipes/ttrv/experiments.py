"""Regenerate the TTRV results table and plots from scratch: ``python -m recipes.ttrv.experiments``.

Steps (each run's summary is cached under ``--out/runs/<name>/summary.json``, so a re-run only does
what is missing; ``--jobs N`` runs N at once, each in its own process):

1. data (``verl.data.digits``), the tiny pretrained base (``recipes.ttrv.pretrain_base``, answers in
   several phrasings) and the older single-token base (``--answer-form digit``) for one comparison row;
2. hyper-parameters chosen on the labeled *development* shift (``dev_elastic``) only: a coordinate search
   over the learning rate, then the epochs, then the entropy form (adapted greedy accuracy, seed 1);
3. the grid with the chosen settings, every entry over ``--seeds`` seeds, 32 votes per image of which 16
   train, maj@32 / mean@32 reported (the base's majority at the same sample budget): protocol (a) on every
   shifted split; protocols (b) 20 images, (c) one image, (d) noise → blur; ablations on the noise split
   (majority reward, entropy 0, the other entropy form, 8 votes / 8 trained); the single-token base;
4. ``--out/results.md`` (the headline against the targets and the table, also written into
   ``docs/results.md`` between the ``ttrv-results`` markers) and plots of accuracy and answer entropy vs step
   (copied to ``docs/results/``).

``--variant full`` is the whole grid; ``core`` (protocol (a) on every shift, (c), the single-token row,
50 prompts) is what a shared 2-core machine affords in about 40 minutes; ``small`` runs the same code on
a few prompts and one seed (CI runs it in a test with a random tiny model).
"""

from __future__ import annotations

import argparse
import logging
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from recipes.ttrv.grid_runs import SHIFTS, Run, execute_all, split_file
from verl.utils.doc_sections import RESULTS_PAGE, publish_figures, write_section

logger = logging.getLogger("recipes.ttrv.experiments")
RESULTS_SECTION = "ttrv-results"  # docs/results.md markers <!-- ttrv-results:start/end -->
PLOT_TEST_FREQ = 10  # validation every k steps in the plotted runs only (validation does not touch training RNG)


@dataclass
class Variant:
    """Sizes of one regeneration variant; mean@N / maj@N use N = ``n_votes`` (the voting budget)."""

    seeds: int
    max_prompts: int  # first prompts of each split used for adaptation and evaluation
    n_votes: int  # samples per prompt that vote (also N of the reported mean@N / maj@N)
    n_train: int  # of them, samples that train
    dev_lrs: tuple[float, ...]  # tried in this order on the dev shift, then ...
    dev_epochs: tuple[int, ...]  # ... epochs with the best lr, then ...
    dev_entropy_forms: tuple[str, ...]  # ... the entropy form with the best lr and epochs
    shifts: tuple[str, ...] = SHIFTS
    protocols: tuple[str, ...] = ("a", "b", "c", "d")
    ablations: bool = True
    single_token_row: bool = True  # protocol (a) on test_noise with the older single-token base
    local_backend: bool = True  # one in-process worker (no Ray start-up per run); False: 2 Ray workers
    extra: list[str] = field(default_factory=list)


VARIANTS = {
    "full": Variant(seeds=3, max_prompts=100, n_votes=32, n_train=16, dev_lrs=(1e-5, 3e-5, 1e-4),
                    dev_epochs=(2, 4), dev_entropy_forms=("paper", "per_sample")),
    # the grid this session could afford on 2 shared cores: protocol (a) on every shift, (c), the single-token
    # base; 50 prompts per split; the dev search over the learning rate only
    "core": Variant(seeds=3, max_prompts=50, n_votes=32, n_train=16, dev_lrs=(3e-5, 1e-4), dev_epochs=(2,),
                    dev_entropy_forms=("per_sample",), protocols=("a", "c"), ablations=False),
    "small": Variant(seeds=1, max_prompts=8, n_votes=4, n_train=4, dev_lrs=(1e-4,), dev_epochs=(1,),
                     dev_entropy_forms=("paper",), shifts=("noise",), ablations=False,
                     single_token_row=False, local_backend=False, extra=["data.train_batch_size=4"]),
}


@dataclass(frozen=True)
class Settings:
    """The hyper-parameters chosen on the dev shift."""

    lr: float
    epochs: int
    entropy_form: str

    def overrides(self) -> list[str]:
        return [f"actor_rollout_ref.actor.optim.lr={self.lr}", f"++reward.kwargs.entropy_form={self.entropy_form}"]


SINGLE_TOKEN_ROW = "single-token base (greedy = mode)"


def plan(v: Variant, data: Path, chosen: Settings, model: str, single_token_model: str | None) -> list[Run]:
    """Every run of the grid (not the dev selection)."""
    runs: list[Run] = []
    ep = chosen.epochs
    for seed in range(1, v.seeds + 1):
        for shift in v.shifts:
            f = split_file(data, f"test_{shift}")
            plotted = [f"trainer.test_freq={PLOT_TEST_FREQ}"] if seed == 1 else []  # see plots()
            runs.append(Run(f"a_{shift}_s{seed}", "protocol_a_full", _io(f, f) + plotted, "(a) whole split",
                            f"test_{shift}", ep))
        noise, blur = split_file(data, "test_noise"), split_file(data, "test_blur")
        others = {
            "b": Run(f"b20_s{seed}", "protocol_b_20", _io(noise, noise) + [f"data.train_subset={min(20, v.max_prompts)}"],
                     "(b) 20 images", "test_noise"),
            "c": Run(f"c1_s{seed}", "protocol_c_single", _io(noise, noise), "(c) one image", "test_noise"),
            "d": Run(f"d_s{seed}", "protocol_d_cross", _io(noise, blur), "(d) noise → blur", "test_blur", ep),
        }
        runs += [run for key, run in others.items() if key in v.protocols]
        other_form = "paper" if chosen.entropy_form == "per_sample" else "per_sample"
        ablations = {
            "majority reward": ["++reward.kwargs.reward_type=majority"],
            "entropy 0": ["++reward.kwargs.entropy_coef=0.0"],
            f"entropy 0.75 {other_form.replace('_', '-')}": [f"++reward.kwargs.entropy_form={other_form}"],
            "8 votes, 8 trained": ["actor_rollout_ref.rollout.n_votes=8", "actor_rollout_ref.rollout.n=8"],
        }
        for label, ov in ablations.items() if v.ablations else ():
            key = label.replace(" ", "_").replace(".", "").replace(",", "")
            runs.append(Run(f"abl_{key}_s{seed}", "protocol_a_full", _io(noise, noise) + ov, f"ablation: {label}",
                            "test_noise", ep))
        if single_token_model is not None and v.single_token_row:
            runs.append(Run(f"single_token_s{seed}", "protocol_a_full", _io(noise, noise), SINGLE_TOKEN_ROW,
                            "test_noise", ep, single_token_model))
    for r in runs:
        seed = int(r.name.rsplit("_s", 1)[1])
        # the ablation's own overrides come after the chosen ones, so they win
        r.overrides = _common(v, chosen, r.model or model, seed) + r.overrides
    return runs


def _io(train: str, val: str) -> list[str]:
    return [f"data.train_files=[{train}]", f"data.val_files=[{val}]"]


def _common(v: Variant, chosen: Settings, model: str, seed: int) -> list[str]:
    return [f"actor_rollout_ref.model.path={model}", f"data.max_samples={v.max_prompts}", *chosen.overrides(),
            f"trainer.seed={seed}", f"data.seed={seed}", f"actor_rollout_ref.rollout.n_votes={v.n_votes}",
            f"actor_rollout_ref.rollout.n={v.n_train}", f"actor_rollout_ref.rollout.val_sample_n={v.n_votes}",
            "trainer.logger=[jsonl]",
            "actor_rollout_ref.rollout.name=hf",  # tiny model: no engine start-up per run
            *(["trainer.backend=local", "trainer.n_gpus_per_node=1"] if v.local_backend else []),
            "trainer.save_freq=-1", *v.extra]


def choose_settings(v: Variant, data: Path, model: str, out: Path,
                    jobs: int = 1) -> tuple[Settings, list[tuple[str, float]]]:
    """Coordinate search on the dev shift (seed 1): the learning rate, then the epochs, then the entropy form,
    each by adapted greedy accuracy on ``dev_elastic`` (ties keep the earlier value)."""
    dev = split_file(data, "dev_elastic")
    summaries: dict[Settings, dict] = {}

    def dev_run(st: Settings) -> Run:
        return Run(f"dev_lr{st.lr:g}_e{st.epochs}_{st.entropy_form}", "protocol_a_full",
                   _common(v, st, model, 1) + _io(dev, dev), "dev", "dev_elastic", st.epochs)

    def score(st: Settings) -> float:
        return _get(summaries[st], "adapted", "dev_elastic", "mean@1")

    best = Settings(v.dev_lrs[0], v.dev_epochs[0], v.dev_entropy_forms[0])
    for field_name, values in (("lr", v.dev_lrs), ("epochs", v.dev_epochs), ("entropy_form", v.dev_entropy_forms)):
        cands = [Settings(**{**best.__dict__, field_name: x}) for x in values]
        todo = [st for st in cands if st not in summaries]
        done = execute_all([dev_run(st) for st in todo], out, jobs)
        summaries.update({st: done[dev_run(st).name] for st in todo})
        best = max(cands, key=score)  # max keeps the first of equal scores
    base = _get(summaries[best], "base", "dev_elastic", "mean@1")
    labels = [(f"lr {st.lr:g}, {st.epochs} epochs, {st.entropy_form.replace('_', '-')} entropy", score(st))
              for st in summaries]
    return best, [("base", base), *labels]


def _get(summary: dict, kind: str, split: str, metric: str) -> float:
    key = f"{kind}/val-core/digits_{split}/acc/{metric}"
    if key not in summary:
        raise KeyError(f"{key} missing from run summary; keys: {sorted(summary)}")
    return float(summary[key])


def _fmt(values: list[float]) -> str:
    m = 100 * statistics.mean(values)
    s = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}"


def table(runs: list[Run], results: dict[str, dict], n: int, v: Variant) -> str:
    """Markdown table: one row per (group, split); mean ± std over seeds."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        rows.setdefault((r.group, r.split), []).append(results[r.name])
    head = (f"| setting | eval split | seeds | base greedy | adapted greedy | Δ greedy | base mean@{n} | "
            f"adapted mean@{n} | base maj@{n} | adapted maj@{n} |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for (group, split), summaries in rows.items():
        def col(kind: str, metric: str, ss=summaries, sp=split) -> list[float]:
            return [_get(s, kind, sp, metric) for s in ss]

        delta = [a - b for a, b in zip(col("adapted", "mean@1"), col("base", "mean@1"))]
        sign = "+" if statistics.mean(delta) >= 0 else ""
        lines.append(f"| {group} | {split} | {len(summaries)} | {_fmt(col('base', 'mean@1'))} | "
                     f"{_fmt(col('adapted', 'mean@1'))} | {sign}{_fmt(delta)} | {_fmt(col('base', f'mean@{n}'))} | "
                     f"{_fmt(col('adapted', f'mean@{n}'))} | {_fmt(col('base', f'maj@{n}'))} | "
                     f"{_fmt(col('adapted', f'maj@{n}'))} |")
    return head + "\n".join(lines) + "\n"


def headline(runs: list[Run], results: dict[str, dict], n: int) -> str:
    """Protocol (a) averaged over shifts and seeds (Δ greedy, adapted greedy vs base maj@N) and Δ of (c)."""

    def col(rs: list[Run], kind: str, metric: str) -> list[float]:
        return [100 * _get(results[r.name], kind, r.split, metric) for r in rs]

    def mean_std(x: list[float]) -> str:
        return f"{statistics.mean(x):+.1f} ± {statistics.stdev(x) if len(x) > 1 else 0.0:.1f}"

    parts = []
    if a := [r for r in runs if r.group == "(a) whole split"]:
        base, adapted, maj = col(a, "base", "mean@1"), col(a, "adapted", "mean@1"), col(a, "base", f"maj@{n}")
        d = [y - x for x, y in zip(base, adapted)]
        dm = [y - x for x, y in zip(maj, adapted)]
        parts.append(f"Protocol (a), mean over {len({r.split for r in a})} shift(s) × seeds: greedy "
                     f"{statistics.mean(base):.1f} → {statistics.mean(adapted):.1f}, Δ greedy = "
                     f"{statistics.mean(d):+.1f} points (target ≥ +5.0: {'met' if statistics.mean(d) >= 5 else 'missed'}); "
                     f"adapted greedy − base maj@{n} = {statistics.mean(dm):+.1f} points "
                     f"(target ≥ 0: {'met' if statistics.mean(dm) >= 0 else 'missed'}).")
    if c := [r for r in runs if r.group == "(c) one image"]:
        d = [y - x for x, y in zip(col(c, "base", "mean@1"), col(c, "adapted", "mean@1"))]
        parts.append(f"Single image (c): Δ greedy = {mean_std(d)} points over {len(d)} seed(s) "
                     f"(target > 0: {'met' if statistics.mean(d) > 0 else 'missed'}).")
    return " ".join(parts) + "\n"


def plots(runs: list[Run], out: Path) -> list[Path]:
    """Greedy accuracy and answer entropy vs step for protocol (a), seed 1, one line per shift."""
    from verl.logging.plots import plot_compare

    first = [r for r in runs if r.group == "(a) whole split" and r.name.endswith("_s1")]
    series = {r.split: out / "runs" / r.name / "metrics.jsonl" for r in first}
    acc_keys = {r.split: f"val-core/digits_{r.split}/acc/mean@1" for r in first}
    return [plot_compare(series, "greedy accuracy (val-core/<split>/acc/mean@1)", out / "accuracy_vs_step.png",
                         keys=acc_keys),
            plot_compare(series, "train/answer_entropy", out / "answer_entropy_vs_step.png")]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from recipes.ttrv import estimator_grid

    p.add_argument("--variant", choices=sorted(VARIANTS) + sorted(estimator_grid.SIZES), default="full",
                   help="estimators: the label-free rewards comparison (recipes/ttrv/estimator_grid.py)")
    p.add_argument("--data", default="data/digits")
    p.add_argument("--model", default="checkpoints/tiny_base/qwen2_5_vl", help="base model (built if missing)")
    p.add_argument("--single-token-model", default="checkpoints/tiny_base/qwen2_5_vl_digit",
                   help="the older single-token base for its row (built if missing; '' skips the row)")
    p.add_argument("--out", default=None, help="default: logs/ttrv_results/<variant>")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each in its own process)")
    p.add_argument("--results-page", default=None,
                   help=f"page whose ttrv-results section is replaced (default: {RESULTS_PAGE}, only with --variant full)")
    p.add_argument("overrides", nargs="*", help="trainer overrides added to every run (e.g. to compare a switch)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data, out = Path(a.data), Path(a.out or f"logs/ttrv_results/{a.variant}")
    if not (data / "manifest.json").is_file():
        from verl.data.digits import build_digits_dataset

        build_digits_dataset(data, seed=0)
    from recipes.ttrv.pretrain_base import main as pretrain

    if not (Path(a.model) / "config.json").is_file():
        pretrain(["--arch", "qwen2_5_vl", "--data", str(data), "--out", a.model])
    if a.variant in estimator_grid.SIZES:  # written to docs/results/estimators.md (--results-page to redirect)
        md = estimator_grid.run(estimator_grid.SIZES[a.variant], data, a.model, out, a.jobs, a.variant)
        page = a.results_page or (estimator_grid.PAGE if a.variant != "estimators-small" else None)
        if page:
            estimator_grid.publish(md, out / estimator_grid.PLOT, Path(page))
        print(md)
        return md
    v = replace(VARIANTS[a.variant], extra=[*VARIANTS[a.variant].extra, *a.overrides])
    single = a.single_token_model if v.single_token_row else None
    if single:  # cached: a no-op when up to date
        pretrain(["--arch", "qwen2_5_vl", "--data", str(data), "--out", single, "--answer-form", "digit"])
    chosen, dev_scores = choose_settings(v, data, a.model, out, a.jobs)
    runs = plan(v, data, chosen, a.model, single)
    results = execute_all(runs, out, a.jobs)
    dev = "; ".join(f"{label}: {100 * sc:.1f}%" for label, sc in dev_scores)
    n = v.n_votes
    md = (f"Variant `{a.variant}`: first {v.max_prompts} prompts of each split, {v.seeds} seed(s); {n} votes per "
          f"image, {v.n_train} of them trained; mean@N / maj@N with N = {n} samples (the same sample budget), "
          f"greedy = one greedy answer per item. Chosen on the dev shift `dev_elastic` only (greedy accuracy; "
          f"{dev}): lr {chosen.lr:g}, {chosen.epochs} epochs, {chosen.entropy_form.replace('_', '-')} entropy.\n\n"
          + headline(runs, results, n) + "\n" + table(runs, results, n, v))
    (out / "results.md").write_text(md)
    pngs = plots(runs, out)
    page = a.results_page or (RESULTS_PAGE if a.variant == "full" else None)
    if page:
        figures = publish_figures(page, [(png, png.name, png.stem.replace("_", " ")) for png in pngs])
        write_section(page, RESULTS_SECTION, f"{md}\n{figures}\n")
    print(md)
    return md


if __name__ == "__main__":
    main()
