"""Regenerate the SOPHIA results table: ``python -m recipes.sophia.experiments [--variant full|small]``.

For every seed (``--seeds``, default 0 1 2), held-out greedy accuracy of the tiny VLM:

* ``base``: the pretrained captioner VLM (never trained to answer);
* ``sophia``: one round of SOPHIA (the pipeline with the shipped config, seed-dependent sampling);
* ``caption_sft``: baseline (i): the same selected questions, trained on the kept *captions* only;
* ``no_caption_reward``: ablation: any correct trajectory (caption reward ignored), shortest kept;
* ``random_trajectory``: ablation (the paper's): a random correct trajectory of a caption with R(c) > α
  instead of the shortest;
* ``grpo``: baseline (ii): on-policy GRPO with gold rewards from the base VLM (``grpo_baseline``);
* ``sophia_grpo``: the same GRPO run started from the SOPHIA model;
* ``sophia_alpha_dev``: SOPHIA with the selection threshold α chosen on the labeled ``dev`` questions
  (first seed's collection, ``ALPHAS``; ties keep the larger α), never on the reported ``eval`` questions.

Baselines reuse the SOPHIA run's collection files (copied), so they differ from it only where stated.
Every run folder lives under ``--out/runs/<method>_s<seed>/`` and is resumable; ``result.json`` marks a
finished method. The table goes to ``--out/results.md`` and, for the full variant, into ``docs/results.md``
between the ``sophia-results`` markers, with the first seed's caption-reward histogram and before/after plot
copied to ``docs/results/sophia_*.png``.
``--variant small`` runs the same code with a few items and one seed (a smoke test).

``--regime hard`` runs the same methods where captions err: the question images of
``data/sophia_pairs_hard`` carry a shift (``HARD_SHIFT``) the clean-trained captioner misreads often
(the command builds that folder); its table goes between the ``sophia-results-hard`` markers and to
``logs/sophia/experiments_hard``. ``--regime easy`` (default) is the clean task.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.sophia.config import DEFAULT_CONFIG_NAME, load_sophia_config
from recipes.sophia.grpo_baseline import GRPOCfg, run_grpo
from recipes.sophia.pipeline import evaluate_folder, run_pipeline
from recipes.sophia.runio import write_json
from verl.utils.cli import setup_logging
from verl.utils.doc_sections import RESULTS_PAGE, publish_figures, write_section

logger = logging.getLogger("recipes.sophia.experiments")
METHODS = ("base", "sophia", "caption_sft", "no_caption_reward", "random_trajectory", "grpo", "sophia_grpo",
           "sophia_alpha_dev")
ALPHAS = (0.75, 0.5, 0.25, 0.0)  # strict R(c) > α: 0.75 is the paper's; 0.0 keeps any correct trajectory
COLLECTION_FILES = ("captions.jsonl", "captions.stamp.json", "reasonings.jsonl", "reasonings.stamp.json", "rewards.jsonl",
                    "reasoner_cache.sqlite")
HARD_SHIFT = "blur"  # question-image shift of the hard regime (36 % of the base captions wrong; noise: 16 %)
PLOTS = (("caption_reward_hist.png", "caption-reward histogram"),
         ("accuracy_before_after.png", "accuracy before and after SOPHIA"))  # copied from the first seed's run


@dataclass(frozen=True)
class Regime:
    """Where a table's questions come from and where it goes."""

    data: str  # pairs folder
    shift: str | None  # question-image shift (None: clean; built by the command otherwise)
    section: str  # docs/results.md markers <!-- section:start/end -->
    out: str  # default run folder
    figure_prefix: str  # docs/results/<prefix><plot>


REGIMES = {
    "easy": Regime("data/sophia_pairs", None, "sophia-results", "logs/sophia/experiments", "sophia_"),
    "hard": Regime("data/sophia_pairs_hard", HARD_SHIFT, "sophia-results-hard", "logs/sophia/experiments_hard",
                   "sophia_hard_"),
}
SELECTION_FILES = ("selected.jsonl", "selection.json", "selection.stamp.json")
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"seeds": [0, 1, 2], "overrides": [], "grpo": GRPOCfg()},
    "small": {"seeds": [0], "overrides": ["data.max_train=6", "data.max_eval=6", "caption.k=2", "reason.n=4",
                                          "trainer.total_epochs=1", "select.alpha=0.0", "eval.max_new_tokens=16",
                                          "reason.max_new_tokens=16", "caption.max_new_tokens=12"],
              "grpo": GRPOCfg(steps=1, prompts_per_step=2, group=2, max_new_tokens=16)},
}


def _cfg(config: str | None, out: Path, name: str, seed: int, overrides: list[str]):
    return load_sophia_config(config or DEFAULT_CONFIG_NAME, [
        f"trainer.log_dir={out}", "trainer.project_name=runs", f"trainer.experiment_name={name}",
        f"trainer.seed={seed}", "trainer.logger=[jsonl]", *overrides])


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if (src / n).is_file() and not (dst / n).exists():
            shutil.copy2(src / n, dst / n)


def run_seed(seed: int, out: Path, config: str | None, overrides: list[str], grpo: GRPOCfg) -> dict[str, dict]:
    """All methods for one seed; returns ``{method: metrics}`` (cached per method in ``result.json``)."""
    from recipes.sophia import stages as S
    from verl.logging.tracker import Tracker

    res: dict[str, dict] = {}

    def done(name: str) -> dict | None:
        p = out / "runs" / f"{name}_s{seed}" / "result.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def finish(name: str, metrics: dict) -> dict:
        write_json(out / "runs" / f"{name}_s{seed}" / "result.json", metrics)
        return metrics

    cfg = _cfg(config, out, f"sophia_s{seed}", seed, overrides)
    sophia_run = cfg.run_path
    res["sophia"] = done("sophia") or finish("sophia", run_pipeline(cfg))
    res["base"] = {k.replace("/base/", "/sophia/"): v for k, v in res["sophia"].items() if k.startswith("eval/base/")}
    for name, extra, files in (("caption_sft", ["update.target=caption"], COLLECTION_FILES + SELECTION_FILES),
                               ("no_caption_reward", ["select.use_caption_reward=false"], COLLECTION_FILES),
                               ("random_trajectory", ["select.pick=random"], COLLECTION_FILES)):
        c = _cfg(config, out, f"{name}_s{seed}", seed, [*overrides, *extra, "trainer.val_before_train=false"])
        res[name] = _finished(out, f"{name}_s{seed}", c, sophia_run, files)
    eval_q, train_q = S.questions_of(cfg, "eval"), S.questions_of(cfg, "train")
    sp = S.system_prompt_of(cfg)
    for name, init in (("grpo", cfg.model_path), ("sophia_grpo", str(sophia_run / "model"))):
        if done(name) is None:
            run = out / "runs" / f"{name}_s{seed}"
            g = GRPOCfg(**{**grpo.__dict__, "seed": seed})
            with Tracker("runs", f"{name}_s{seed}", backends=["jsonl"], log_dir=out, config=g.__dict__) as tr:
                stats = run_grpo(init, train_q, run / "model", g, sp, tr)
                m = evaluate_folder(cfg, eval_q, run / "model", "sophia", run)
                tr.log(m, step=g.steps)
            finish(name, {**m, "grpo": stats})
        res[name] = done(name)
    return res


def _finished(out: Path, name: str, cfg, source: Path, files: tuple[str, ...] = COLLECTION_FILES) -> dict:
    """Run ``cfg`` on a copy of ``source``'s ``files`` (cached in ``runs/<name>/result.json``)."""
    p = out / "runs" / name / "result.json"
    if not p.is_file():
        _copy(source, cfg.run_path, files)
        write_json(p, run_pipeline(cfg))
    return json.loads(p.read_text())


def choose_alpha(out: Path, config: str | None, overrides: list[str], seed: int) -> tuple[float, list[tuple]]:
    """The α in ``ALPHAS`` with the best accuracy on the ``dev`` questions (seed ``seed``'s collection)."""
    source = _cfg(config, out, f"sophia_s{seed}", seed, overrides).run_path
    scores = []
    for alpha in ALPHAS:
        name = f"dev_alpha{alpha:g}_s{seed}"
        cfg = _cfg(config, out, name, seed, [*overrides, f"select.alpha={alpha}", "data.eval_file=dev.json",
                                             "trainer.val_before_train=false"])
        scores.append((alpha, _finished(out, name, cfg, source)["eval/sophia/acc"]))
    best = max(scores, key=lambda t: t[1])[0]  # first maximum: ties keep the larger α
    return best, scores


def run_alpha(out: Path, config: str | None, overrides: list[str], seed: int, alpha: float) -> dict:
    """SOPHIA for ``seed`` with threshold ``alpha`` (reuses the seed's collection)."""
    shipped = _cfg(config, out, f"sophia_s{seed}", seed, overrides)
    if shipped.select.alpha == alpha and shipped.select.use_caption_reward:
        return json.loads((out / "runs" / f"sophia_s{seed}" / "result.json").read_text())  # the same run
    name = f"sophia_alpha{alpha:g}_s{seed}"
    cfg = _cfg(config, out, name, seed, [*overrides, f"select.alpha={alpha}", "trainer.val_before_train=false"])
    return _finished(out, name, cfg, shipped.run_path)


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    mean = 100 * statistics.mean(vals)
    return f"{mean:.1f} ± {100 * statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{mean:.1f}"


def write_table(results: dict[int, dict[str, dict]], path: Path, command: str, note: str = "",
                data_dir: str = "data/sophia_pairs") -> str:
    """Markdown: accuracy per method and seed, mean ± std, plus the collection statistics per seed."""
    seeds = sorted(results)
    key = "eval/sophia/acc"
    lines = ["# SOPHIA results (tiny CPU setup)", "",
             f"Generated by `{command}` on {datetime.date.today()} (CPU; finished runs are reused from its run folder). "
             f"Held-out digit-pair questions (`{data_dir}/eval.json`), greedy decoding, accuracy in %; "
             "mean ± sample std over seeds. See `docs/sophia.md` for the setup." + (f" {note}" if note else ""), "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | boxed answer | digits stated right |",
             "|---|" + "---|" * (len(seeds) + 3)]
    for m in METHODS:
        rows = [results[s].get(m) or {} for s in seeds]
        acc = [r[key] for r in rows if key in r]
        boxed = [r["eval/sophia/boxed_rate"] for r in rows if "eval/sophia/boxed_rate" in r]
        digits = [r["eval/sophia/digits_stated_right"] for r in rows if "eval/sophia/digits_stated_right" in r]
        cells = [f"{100 * r[key]:.1f}" if key in r else "-" for r in rows]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {_fmt(acc)} | {_fmt(boxed)} | {_fmt(digits)} |")
    types = sorted({k.rsplit("/", 1)[1] for s in seeds for k in results[s].get("sophia", {})
                    if k.startswith("eval/sophia/acc/")})
    lines += ["", "Per question type (mean over seeds):", "", "| method | " + " | ".join(types) + " |",
              "|---|" + "---|" * len(types)]
    for m in METHODS:
        cells = [_fmt([results[s][m][f"{key}/{t}"] for s in seeds if f"{key}/{t}" in (results[s].get(m) or {})])
                 for t in types]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    kept = "sophia/kept_fraction/"
    ktypes = sorted({k[len(kept):] for s in seeds for k in results[s].get("sophia", {}) if k.startswith(kept)})
    if ktypes:  # the caption-reward filter against keeping any correct trajectory, per question type
        lines += ["", "Kept training questions per question type (mean over seeds):", "",
                  "| method | " + " | ".join(ktypes) + " |", "|---|" + "---|" * len(ktypes)]
        for m in ("sophia", "no_caption_reward", "sophia_alpha_dev"):
            cells = [_fmt([results[s][m][kept + t] for s in seeds if kept + t in (results[s].get(m) or {})])
                     for t in ktypes]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    stat_keys = [("sophia/reasoning_accuracy", "reasoning acc."), ("sophia/caption_correct_fraction", "captions right"),
                 ("sophia/caption_reward_mean/correct_caption", "R(c) right caption"),
                 ("sophia/caption_reward_mean/wrong_caption", "R(c) wrong caption"),
                 ("sophia/kept_fraction", "kept questions"),
                 ("sophia/caption_correct_fraction/above_alpha", "captions right among R(c)>α")]
    lines += ["", "SOPHIA collection per seed (training questions):", "",
              "| seed | " + " | ".join(n for _, n in stat_keys) + " | mean kept length (tokens) |",
              "|---|" + "---|" * (len(stat_keys) + 1)]
    for s in seeds:
        r = results[s]["sophia"]
        cells = [f"{100 * r[k]:.1f}%" if k in r else "-" for k, _ in stat_keys]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {r.get('sophia/mean_kept_length_tokens', 0):.1f} |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="full", choices=sorted(VARIANTS))
    p.add_argument("--regime", default="easy", choices=sorted(REGIMES), help="clean questions, or shifted ones")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--config-name", dest="config", default=None,
                   help="YAML name in recipes/sophia/config (default: sophia_cpu_tiny)")
    p.add_argument("--out", default=None, help="run folder (default: the regime's, under logs/sophia/)")
    p.add_argument("--results-page", default=None,
                   help=f"page whose section is replaced (default: {RESULTS_PAGE}, only with --variant full)")
    p.add_argument("overrides", nargs="*", help="pipeline overrides applied to every run")
    a = p.parse_args(argv)
    setup_logging()
    v, regime = VARIANTS[a.variant], REGIMES[a.regime]
    t0 = time.perf_counter()
    out = Path(a.out or regime.out)
    overrides = [*v["overrides"], *a.overrides]
    if regime.shift is not None:  # the shifted question images are built here (same pairs as the clean task)
        from recipes.sophia.pairs import ensure_pairs_dataset

        ensure_pairs_dataset(regime.data, seed=0, shift=regime.shift)
        overrides = [f"data.dir={regime.data}", *overrides]
    results = {s: run_seed(s, out, a.config, overrides, v["grpo"]) for s in (a.seeds or v["seeds"])}
    alpha, dev_scores = choose_alpha(out, a.config, overrides, min(results))
    for s in results:
        results[s]["sophia_alpha_dev"] = run_alpha(out, a.config, overrides, s, alpha)
    note = (f"`sophia_alpha_dev`: α = {alpha:g}, chosen on the labeled `dev` questions (seed {min(results)}; "
            + ", ".join(f"α {x:g}: {100 * acc:.1f}%" for x, acc in dev_scores) + "), never on `eval`.")
    if regime.shift is not None:
        note = (f"Hard regime: question images with the `{regime.shift}` shift (`{regime.data}`), captioner "
                f"pretrained on clean pairs. " + note)
    cmd = "python -m recipes.sophia.experiments" + (f" --variant {a.variant}" if a.variant != "full" else "") + (
        f" --regime {a.regime}" if a.regime != "easy" else "")
    text = write_table(results, out / "results.md", cmd, note, data_dir=regime.data)
    logger.info("done in %.0f s", time.perf_counter() - t0)
    page = a.results_page or (RESULTS_PAGE if a.variant == "full" else None)
    if page:
        first = out / "runs" / f"sophia_s{min(results)}" / "plots"
        figures = publish_figures(page, [(first / name, f"{regime.figure_prefix}{name}", alt) for name, alt in PLOTS])
        write_section(page, regime.section, text.split("\n", 2)[2] + "\n" + figures + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
