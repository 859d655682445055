"""Two Ray nodes on this machine (``ray start`` head + worker, loopback, distinct ports, one CPU each): the trainer
with ``trainer.ray_address`` and ``trainer.nnodes=2`` puts one worker on each node and ends with the same weights
as the one-node two-worker run. The test stops only the processes it started (their process groups)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from verl.single_controller.worker_group import ResourcePoolSpec

pytestmark = pytest.mark.slow
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config")
RAY = str(Path(sys.executable).with_name("ray"))
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}  # a private loopback test cluster (token auth would need a shared token)


def base_env() -> dict[str, str]:
    """This process's environment without the single-machine switch ``init_ray`` sets for runs without
    ``trainer.ray_address`` (an earlier in-process run leaves it; a worker node then refuses to join)."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}

# Runs one training job in a fresh process, then saves rank 0's full weights and where each worker ran.
TRAIN = textwrap.dedent("""
    import json, sys
    import torch
    import verl
    from verl.config.loader import load_config
    from verl.data.formats import load_records
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer
    from verl.trainer.main import init_ray

    out, config_dir, data, *overrides = sys.argv[1:]
    cfg = load_config("ttrv_cpu_tiny", overrides, config_dir=config_dir)
    records = load_records([data])[:4]
    init_ray(cfg)
    import time
    import ray
    deadline = time.monotonic() + 300  # a second node may still be registering on a loaded machine
    while sum(n["Alive"] for n in ray.nodes()) < cfg.trainer.nnodes and time.monotonic() < deadline:
        time.sleep(1)
    tracker = Tracker("p", "e", ["jsonl"], log_dir=cfg.trainer.log_dir, config=cfg)
    trainer = Trainer(cfg, records, records[:2], tracker)
    try:
        trainer.init_workers()
        nodes = ray.util.placement_group_table(trainer.wg.pool.pg)["bundles_to_node_id"]
        trainer.fit()
        weights = trainer.wg.full_state_dict()[0]
    finally:
        trainer.close()
        tracker.finish()
    torch.save({k: torch.as_tensor(v) for k, v in weights.items()}, out + ".pt")
    json.dump({"nodes": [nodes[i] for i in sorted(nodes)], "n_cluster_nodes": len(ray.nodes())}, open(out + ".json", "w"))
    ray.shutdown()
""")


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def ray_node(temp_dir: Path, head_port: int, head: bool) -> subprocess.Popen:
    """``ray start --block`` in its own process group (so stopping it stops exactly its daemons)."""
    p = free_ports(7)
    cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
           "--object-manager-port", str(p[0]), "--node-manager-port", str(p[1]), "--metrics-export-port", str(p[2]),
           "--dashboard-agent-listen-port", str(p[3]), "--dashboard-agent-grpc-port", str(p[4]),
           "--runtime-env-agent-port", str(p[5]), "--object-store-memory", str(200 * 1024 * 1024),
           "--disable-usage-stats"]
    if head:
        cmd += ["--head", "--port", str(head_port), "--ray-client-server-port", str(p[6]), "--include-dashboard",
                "false", "--temp-dir", str(temp_dir)]
    else:
        cmd += ["--address", f"127.0.0.1:{head_port}"]
    log = open(temp_dir / f"ray_start_{'head' if head else 'worker'}.log", "w")
    env = {**base_env(), **RAY_ENV}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def wait_for_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"Ray head did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop one started node: SIGTERM its process group (ray start --block and the daemons it spawned)."""
    import psutil

    try:
        group = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    children = psutil.Process(proc.pid).children(recursive=True) if psutil.pid_exists(proc.pid) else []
    os.killpg(group, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
    for child in children:  # a daemon that left the group
        if child.is_running():
            child.kill()


def train(out: Path, model: Path, data: Path, tmp: Path, *extra: str) -> tuple[dict, dict]:
    overrides = [f"actor_rollout_ref.model.path={model}", f"data.train_files=[{data}]", f"data.val_files=[{data}]",
                 "data.train_batch_size=2", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
                 "actor_rollout_ref.rollout.val_sample_n=1", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                 "actor_rollout_ref.rollout.name=hf", "trainer.total_training_steps=1", "trainer.val_before_train=false",
                 "trainer.save_freq=0", f"trainer.default_local_dir={tmp / 'ckpt'}", f"trainer.log_dir={tmp / 'logs'}",
                 "trainer.device=cpu", *extra]
    env = {**base_env(), **RAY_ENV, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", TRAIN, str(out), CONFIG_DIR, str(data), *overrides], check=True, env=env,
                   timeout=600)
    return torch.load(str(out) + ".pt", weights_only=True), json.loads(Path(str(out) + ".json").read_text())


def test_strategy_spreads_when_nnodes_is_above_one():
    assert ResourcePoolSpec(n_workers=2).strategy == "PACK"
    assert ResourcePoolSpec(n_workers=2, nnodes=2).strategy == "STRICT_SPREAD"
    assert ResourcePoolSpec(n_workers=4, nnodes=2).strategy == "SPREAD"
    with pytest.raises(ValueError, match="n_workers=3 must be a multiple of nnodes=2"):
        ResourcePoolSpec(n_workers=3, nnodes=2)


def test_two_nodes_match_one_node_two_workers(tiny_vlm_path, digits_dir, tmp_path):
    model, data = tiny_vlm_path("qwen2_5_vl"), digits_dir / "test_noise_mc.json"
    temp_dir = Path(tempfile.mkdtemp(prefix="ray2n_", dir="/tmp"))  # short: Ray's socket paths must stay < 108 B
    head_port = free_ports(1)[0]
    started: list[subprocess.Popen] = []
    try:
        started.append(ray_node(temp_dir, head_port, head=True))
        wait_for_port(head_port)
        started.append(ray_node(temp_dir, head_port, head=False))
        two_nodes, info = train(tmp_path / "two_nodes", model, data, tmp_path / "a",
                                f"trainer.ray_address=127.0.0.1:{head_port}", "trainer.nnodes=2",
                                "trainer.n_gpus_per_node=1")
    finally:
        for proc in reversed(started):
            stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert info["n_cluster_nodes"] == 2 and len(set(info["nodes"])) == 2  # one worker on each node
    one_node, info1 = train(tmp_path / "one_node", model, data, tmp_path / "b", "trainer.nnodes=1",
                            "trainer.n_gpus_per_node=2", "trainer.ray_num_cpus=2")
    assert len(set(info1["nodes"])) == 1
    assert two_nodes.keys() == one_node.keys()
    for k in one_node:
        np.testing.assert_allclose(two_nodes[k].numpy(), one_node[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
