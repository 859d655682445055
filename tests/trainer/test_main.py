"""The command line: ``python -m verl.trainer.main`` as a user runs it (subprocesses)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
BAR = re.compile(r"training: +\d+%\|")  # the trainer's progress bar
RECORD = re.compile(r"\d\d:\d\d:\d\d\S* verl[\w.]*: ")  # a log record of the framework
CONFIG = ["--config-dir", str(ROOT / "recipes" / "ttrv" / "config"), "--config-name", "ttrv_cpu_tiny"]


def overrides(model: Path, data: Path, tmp: Path, *extra: str) -> list[str]:
    files = f"[{data / 'test_noise_open.json'}]"
    return [f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
            "data.max_samples=4", "data.train_batch_size=2", "actor_rollout_ref.rollout.n_votes=2",
            "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.val_sample_n=1",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.name=hf",
            f"trainer.default_local_dir={tmp / 'ckpt'}", f"trainer.log_dir={tmp / 'logs'}",
            "trainer.logger=[console,jsonl]", "trainer.project_name=p", "trainer.experiment_name=t", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "VERL_DEBUG": ""}


@pytest.mark.slow
def test_local_backend_runs_without_ray(tiny_vlm_path, digits_dir, tmp_path):
    """trainer.backend=local: trains in one process; Ray is never imported and no Ray process starts; the
    console prints log records on their own lines, never inside the progress bar's line."""
    args = [*CONFIG, *overrides(tiny_vlm_path("qwen2_5_vl"), digits_dir, tmp_path, "trainer.backend=local",
                                "trainer.n_gpus_per_node=1", "trainer.total_training_steps=2")]
    code = ("import sys, runpy\nsys.argv = ['main', *sys.argv[1:]]\ntry:\n"
            "    runpy.run_module('verl.trainer.main', run_name='__main__')\nexcept SystemExit as e:\n"
            "    print('ray imported:', 'ray' in sys.modules)\n    sys.exit(e.code)")
    master, terminal = pty.openpty()  # the console as a user's terminal shows it (the bar is drawn on a TTY)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env(), cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen: set[str] = set()
    chunks: list[bytes] = []
    while True:
        if select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the run closed the terminal
                data = b""
            if not data:
                break
            chunks.append(data)
        try:
            seen |= {c.name() for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.Error:
            pass
    os.close(master)
    proc.wait(timeout=60)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    assert "ray imported: False" in out
    segments = [seg for line in out.split("\n") for seg in line.split("\r")]  # as the terminal draws them
    assert any(BAR.search(seg) for seg in segments) and any(RECORD.search(seg) for seg in segments)
    assert not [seg for seg in segments if BAR.search(seg) and RECORD.search(seg)]  # no record inside the bar
    assert "=== base -> adapted ===" in out
    assert not {n for n in seen if "ray" in n or n in ("gcs_server", "raylet")}, seen
    rows = [json.loads(line) for line in (tmp_path / "logs" / "p" / "t" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if "actor/pg_loss" in r] == [1, 2]


def _bad_inputs(model: Path, data: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, text the error line must contain)."""
    good = [{**r, "image_path": str(data / r["image_path"])}  # absolute: the copies live elsewhere
            for r in json.loads((data / "test_noise_open.json").read_text())[:2]]
    empty = tmp / "empty.json"
    empty.write_text("[]")
    no_image = tmp / "no_image.json"
    no_image.write_text(json.dumps([good[0], {**good[1], "image_path": str(tmp / "gone.png")}]))
    (tmp / "no_config").mkdir()
    good_file = str(data / "test_noise_open.json")
    return {
        "unknown key": (["trainer.total_epoch=1"], "trainer.total_epoch"),
        "missing image": ([f"data.train_files=[{no_image}]"], str(no_image)),
        "empty train file": ([f"data.train_files=[{empty}]"], str(empty)),
        "empty validation file": ([f"data.train_files=[{good_file}]", f"data.val_files=[{empty}]"], str(empty)),
        "model without config.json": ([f"actor_rollout_ref.model.path={tmp / 'no_config'}"], "config.json"),
    }


@pytest.mark.slow
def test_bad_inputs_end_in_one_named_error_line(tiny_vlm_path, digits_dir, tmp_path):
    """Each bad input: exit status 2, one ``error:`` line naming it, no traceback, before any worker starts."""
    model = tiny_vlm_path("qwen2_5_vl")
    for name, (extra, named) in _bad_inputs(model, digits_dir, tmp_path).items():
        args = [*CONFIG, *overrides(model, digits_dir, tmp_path / "run", *extra)]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "verl.trainer.main", *args], env=env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - t0
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and named in errors[0], (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr + proc.stdout, name
        assert not (tmp_path / "run" / "logs").exists(), name  # nothing started, not even the tracker
        print(f"{name}: {elapsed:.1f} s: {errors[0]}")
    debug = subprocess.run([sys.executable, "-m", "verl.trainer.main", *CONFIG, "trainer.total_epoch=1"],
                           env={**env(), "VERL_DEBUG": "1"}, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_config_of_another_command_names_that_command(capsys):
    """protocol_e_online belongs to recipes.ttrv.online: one error line with that command, exit 2."""
    from verl.trainer.main import main

    assert main([*CONFIG[:2], "--config-name", "protocol_e_online", "online.k=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: config 'protocol_e_online' is run by its own command: python -m recipes.ttrv.online "
                   f"--config-dir {CONFIG[1]} --config-name protocol_e_online [key=value ...]"]
    assert main([*CONFIG, "entry_point=pkg.other"]) == 2  # stops before reading any data
    assert "this config is run by python -m pkg.other" in capsys.readouterr().err
    sophia = str(ROOT / "recipes" / "sophia" / "config")
    assert main(["--config-dir", sophia, "--config-name", "sophia_cpu_tiny"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: config 'sophia_cpu_tiny' is run by its own command: "
                                               f"python -m recipes.sophia.main --config-dir {sophia} "
                                               "--config-name sophia_cpu_tiny [key=value ...]")


def _final_weights(ckpt: Path) -> dict:
    """Model tensors of the actor checkpoint at step 4 (DCP read back into one file)."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = ckpt.parent / "final.pt"
    dcp_to_torch_save(ckpt / "global_step_4" / "actor" / "dcp", out)
    return torch.load(out, weights_only=True)["model"]


# LoRA: checkpoints hold only the adapters; a high lr makes them move from their initial B = 0 in four steps.
LORA = ("actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.model.lora_alpha=16",
        "actor_rollout_ref.actor.optim.lr=1e-2", "actor_rollout_ref.actor.skip_zero_adv_groups=false")


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_kill_9_after_an_unsaved_step_then_resume(lora, tiny_vlm_path, digits_dir, tmp_path):
    """SIGKILL after step 3 (last checkpoint: step 2), resume: every step logged once, base -> adapted in
    summary.json, final weights (LoRA: adapters) equal to an uninterrupted run; a re-run of the finished run
    changes nothing."""
    import numpy as np

    model = tiny_vlm_path("qwen2_5_vl")
    extra = LORA if lora else ()

    def cmd(folder: Path) -> list[str]:
        args = overrides(model, digits_dir, folder, "trainer.backend=local", "trainer.n_gpus_per_node=1",
                         "trainer.total_training_steps=4", "trainer.save_freq=2", *extra)
        if lora:  # multiple-choice prompts: the random tiny model's answers differ, so the groups carry signal
            args = [a.replace("test_noise_open.json", "test_noise_mc.json") for a in args]
        return [sys.executable, "-m", "verl.trainer.main", *CONFIG, *args]

    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(cmd(full), env=env(), cwd=tmp_path, check=True, capture_output=True, timeout=600)
    metrics = cut / "logs" / "p" / "t" / "metrics.jsonl"
    proc = subprocess.Popen(cmd(cut), env=env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (metrics.exists() and '"step": 3' in metrics.read_text()):
        time.sleep(0.05)
    proc.kill()  # SIGKILL
    proc.wait()
    assert (cut / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "2", "killed too late"
    assert '"step": 3' in metrics.read_text()  # a step after the last checkpoint was logged
    resumed = subprocess.run(cmd(cut), env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in metrics.open()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]  # each step once (0 = base validation)
    summary = json.loads((cut / "logs" / "p" / "t" / "summary.json").read_text())
    assert any(k.startswith("base/") for k in summary) and any(k.startswith("adapted/") for k in summary)
    assert summary == json.loads((full / "logs" / "p" / "t" / "summary.json").read_text())
    a, b = _final_weights(full / "ckpt"), _final_weights(cut / "ckpt")
    assert a.keys() == b.keys()
    if lora:  # only adapters were saved, and they trained
        assert a and all("lora_" in k for k in a), sorted(a)[:5]
        assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    # re-running the finished run: says so, changes nothing
    before = {p: p.read_bytes() for p in (cut / "logs").rglob("*") if p.is_file()}
    again = subprocess.run(cmd(cut), env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stdout + again.stderr[-2000:]
    assert {p: p.read_bytes() for p in (cut / "logs").rglob("*") if p.is_file()} == before


def _wait_for_step(proc: subprocess.Popen, metrics: Path, step: int) -> None:
    while proc.poll() is None and not (metrics.exists() and f'"step": {step},' in metrics.read_text()):
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the step was logged"


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@pytest.mark.slow
def test_ray_run_listens_on_loopback_and_names_a_dead_worker(tiny_vlm_path, digits_dir, tmp_path):
    """While a single-node Ray run trains, its processes listen on loopback only; killing a worker
    ends the run with one line naming its rank, phase and log, and leaves nothing running."""
    args = overrides(tiny_vlm_path("qwen2_5_vl"), digits_dir, tmp_path, "trainer.n_gpus_per_node=2",
                     "trainer.total_training_steps=200", "trainer.val_before_train=false")
    proc = subprocess.Popen([sys.executable, "-m", "verl.trainer.main", *CONFIG, *args], env=env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(proc, tmp_path / "logs" / "p" / "t" / "metrics.jsonl", 1)
        procs = _tree(proc.pid)
        listening = {(p.pid, p.name(), c.laddr.ip, c.laddr.port) for p in procs
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening and all(ip in LOOPBACK for _, _, ip, _ in listening), listening
        workers = [p for p in procs if "ActorRolloutRefWorker" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in procs]
        workers[1].kill()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: worker rank [01] died during \w+: .+ \(log: .+/worker_[01]\.log\)", last), last
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, [p.name() for p in alive]


@pytest.mark.slow
def test_ctrl_c_shuts_down_cleanly_with_status_130(tiny_vlm_path, digits_dir, tmp_path):
    """SIGINT to the run's process group, as a terminal's Ctrl-C sends it."""
    args = overrides(tiny_vlm_path("qwen2_5_vl"), digits_dir, tmp_path, "trainer.backend=local",
                     "trainer.n_gpus_per_node=1", "trainer.total_training_steps=200", "trainer.val_before_train=false")
    # a terminal's foreground job gets SIGINT; a suite started in the background (`cmd &`) ignores it, and an
    # ignored signal would be inherited by the run
    proc = subprocess.Popen([sys.executable, "-m", "verl.trainer.main", *CONFIG, *args], env=env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_step(proc, tmp_path / "logs" / "p" / "t" / "metrics.jsonl", 1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted: workers stopped"
