"""The same TTRV step, this project vs TRL's GRPOTrainer, measured in one run (issue 10, item 5).

Same model folder, same first prompts of the same file, same sample budget (``--prompts`` x
``--samples`` completions of ``--new-tokens`` tokens per step, two optimizer steps on them, KL to a
reference model, a majority-vote reward). Our side runs with the project's Python
(``verl.trainer.main``, config ``ttrv_cpu_tiny``, no validation, no checkpoints); TRL's with the bench
venv (``bench/vs_trl/setup.sh``). Runs alternate A B A B; the figure per run is the median of its
steps after the first, the figure per configuration the median over its runs. Start-up = whole
process time minus the time of its steps.

    bash bench/vs_trl/setup.sh
    python bench/vs_trl/run.py --rounds 2 --write bench/vs_trl/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# name -> (Hydra overrides of our side, TRL threads of its partner)
OURS: dict[str, list[str]] = {
    "ours HF engine, 1 worker (local)": ["trainer.backend=local", "actor_rollout_ref.rollout.name=hf",
                                         "trainer.n_gpus_per_node=1"],
    "ours vLLM, 1 worker (local)": ["trainer.backend=local", "actor_rollout_ref.rollout.name=vllm",
                                    "trainer.n_gpus_per_node=1"],
    "ours default: Ray, 2 workers + vLLM": ["trainer.backend=ray", "actor_rollout_ref.rollout.name=vllm",
                                            "trainer.n_gpus_per_node=2"],
}
PARTNER = {"ours HF engine, 1 worker (local)": 1, "ours vLLM, 1 worker (local)": 1,
           "ours default: Ray, 2 workers + vLLM": 2}


def _ours(name: str, a: argparse.Namespace, tmp: Path) -> dict:
    run_dir = tmp / f"ours_{len(list(tmp.iterdir()))}"
    cmd = [a.our_python, "-m", "verl.trainer.main", "--config-dir", "recipes/ttrv/config",
           "--config-name", "ttrv_cpu_tiny", *OURS[name],
           f"actor_rollout_ref.model.path={a.model}", f"data.train_files=[{tmp / 'train.json'}]",
           f"data.val_files=[{tmp / 'val.json'}]", "actor_rollout_ref.rollout.val_sample_n=1",
           f"data.train_batch_size={a.prompts}", f"data.max_response_length={a.new_tokens}",
           f"actor_rollout_ref.rollout.n_votes={a.samples}", f"actor_rollout_ref.rollout.n={a.samples}",
           f"trainer.total_training_steps={a.steps}", "trainer.val_before_train=false",
           "trainer.resume_mode=disable", "trainer.save_freq=-1", "trainer.logger=[jsonl]",
           f"trainer.log_dir={run_dir}/logs", f"trainer.default_local_dir={run_dir}/ckpt", *a.override]
    env = dict(os.environ, PYTHONPATH=str(ROOT), VERL_CPU_THREADS_PER_WORKER="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(ln) for f in sorted(run_dir.rglob("metrics.jsonl")) for ln in f.read_text().splitlines()]
    steps = [r["timing_s/step"] for r in rows if "timing_s/step" in r]
    skipped = [r["actor/skipped_group_frac"] for r in rows if "actor/skipped_group_frac" in r]
    if len(steps) != a.steps:
        sys.exit(f"{name}: expected {a.steps} steps in {run_dir}/logs, found {len(steps)}")
    return {"step_s": steps, "process_s": wall, "skipped": statistics.mean(skipped) if skipped else 0.0}


def _trl(threads: int, a: argparse.Namespace, tmp: Path) -> dict:
    cmd = [a.trl_python, str(HERE / "trl_side.py"), "--model", a.model, "--data", str(tmp / "train.json"),
           "--prompts", str(a.prompts), "--samples", str(a.samples), "--new-tokens", str(a.new_tokens),
           "--steps", str(a.steps), "--threads", str(threads), "--out", str(tmp / "trl_out")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"TRL ({threads} threads): exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1].split(" ", 1)[1])
    if len(out["step_s"]) != a.steps:
        sys.exit(f"TRL ({threads} threads): expected {a.steps} steps, got {len(out['step_s'])}")
    return {"step_s": out["step_s"], "process_s": wall}


def _write_data(a: argparse.Namespace, tmp: Path) -> None:
    """The benchmark's prompts: the first prompts x steps records (absolute image paths); val = 1 record.

    Our trainer always validates after its last step (outside the timed steps); one greedy answer keeps
    that out of the way of the whole-process time."""
    src = Path(a.data).resolve()
    records = json.loads(src.read_text())[: a.prompts * a.steps]
    for r in records:
        r["image_path"] = str((src.parent / r["image_path"]).resolve())
    (tmp / "train.json").write_text(json.dumps(records))
    (tmp / "val.json").write_text(json.dumps(records[:1]))


def _summary(runs: list[dict]) -> dict:
    steady = [statistics.median(r["step_s"][1:]) for r in runs]
    process = [r["process_s"] for r in runs]
    startup = [r["process_s"] - sum(r["step_s"]) for r in runs]
    skipped = [r["skipped"] for r in runs if "skipped" in r]
    return {"step": statistics.median(steady), "process": statistics.median(process),
            "startup": statistics.median(startup), "runs": steady,
            "skipped": f"{statistics.mean(skipped):.2f}" if skipped else "n/a"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="checkpoints/tiny_base/qwen2_5_vl")
    p.add_argument("--data", default="data/digits/test_noise_open.json")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="A B pairs per configuration")
    p.add_argument("--only", nargs="*", default=None, help="substrings of our configurations to run")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for our side")
    p.add_argument("--our-python", default=sys.executable)
    p.add_argument("--trl-python", default=str(HERE / ".venv" / "bin" / "python"))
    p.add_argument("--write", default=None, help="also write the table to this Markdown file")
    p.add_argument("--note", default="", help="free text for the Markdown file (e.g. machine load)")
    a = p.parse_args(argv)
    names = [n for n in OURS if a.only is None or any(s in n for s in a.only)]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_vs_trl_") as d:
        tmp = Path(d)
        (tmp / "trl_out").mkdir()
        _write_data(a, tmp)
        for rnd in range(a.rounds):
            for name in names:  # A B: ours, then its TRL partner
                trl_name = f"TRL GRPOTrainer, {PARTNER[name]} thread(s)"
                for key in (name, trl_name):
                    r = _ours(name, a, tmp) if key == name else _trl(PARTNER[name], a, tmp)
                    results.setdefault(key, []).append(r)
                    print(f"[round {rnd + 1}] {key}: {statistics.median(r['step_s'][1:]):.3f} s/step, "
                          f"process {r['process_s']:.1f} s", flush=True)
    s = {k: _summary(v) for k, v in results.items()}
    lines = ["| configuration | s/step (median) | runs | whole process s | start-up s | groups skipped |",
             "|---|---|---|---|---|---|"]
    for k, v in s.items():
        runs = ", ".join(f"{x:.3f}" for x in v["runs"])
        lines.append(f"| {k} | {v['step']:.3f} | {runs} | {v['process']:.1f} | {v['startup']:.1f} | {v['skipped']} |")
    lines += ["", "| ours vs TRL | per-step speed-up (TRL s / ours s) | vs TRL's fastest | "
              "start-up ratio (ours / TRL) | goal |", "|---|---|---|---|---|"]
    fastest = min(v["step"] for k, v in s.items() if k.startswith("TRL"))
    for name in names:
        o, t = s[name], s[f"TRL GRPOTrainer, {PARTNER[name]} thread(s)"]
        speed, start = t["step"] / o["step"], o["startup"] / t["startup"]
        verdict = ("met" if min(speed, fastest / o["step"]) >= 1.5 else "NOT met") + " (≥ 1.5×); start-up " + \
            ("met" if start <= 2 else "NOT met") + " (≤ 2×)"
        lines.append(f"| {name} vs {PARTNER[name]} thread(s) | {speed:.2f}× | {fastest / o['step']:.2f}× | "
                     f"{start:.2f}× | {verdict} |")
    table = "\n".join(lines)
    print("\n" + table)
    if a.write:
        cmd = "python bench/vs_trl/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
        head = (f"# This project vs TRL: the same TTRV step\n\nCommand: `{cmd}`  \n"
                f"Setting: {a.prompts} prompts × {a.samples} samples, {a.new_tokens} new tokens, {a.steps} steps, "
                f"model `{a.model}`, prompts from `{a.data}`; {a.rounds} A B rounds.  \n"
                f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
                f"{a.note}\n\n")
        Path(a.write).write_text(head + table + "\n")


if __name__ == "__main__":
    main()
