"""What the actor does for memory and multi-GPU runs: the reference stored in its compute dtype (same log-probs),
fused AdamW, and collective tensors on the worker's device (NCCL serves only CUDA tensors)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from tests.workers.test_actor import make_data
from verl.config.schema import ActorConfig, FSDPConfig, ModelConfig


class _Stop(Exception):
    pass


def test_collective_tensor_lives_on_the_worker_device(monkeypatch):
    from verl.utils.device import max_over_ranks
    from verl.workers import actor

    assert actor.max_over_ranks is max_over_ranks  # what the actor's micro-batch count goes through
    seen = []

    def fake_all_reduce(t, op=None):
        seen.append((t.device.type, t.tolist() if t.device.type != "meta" else None))
        raise _Stop

    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    with pytest.raises(_Stop):  # "meta" stands in for "cuda": anything but the CPU default
        max_over_ranks(3, torch.device("meta"))
    with pytest.raises(_Stop):
        max_over_ranks(5, "cpu")
    assert seen == [("meta", None), ("cpu", [5])]


@pytest.fixture(scope="module")
def pg():
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_reference_in_compute_dtype_gives_the_actor_log_probs_and_adamw_is_fused(pg, tiny_vlm_path):
    from verl.workers.actor import FSDPActor, max_over_ranks

    path = tiny_vlm_path("qwen2_5_vl")
    cfg = ActorConfig(fsdp=FSDPConfig(param_dtype="bfloat16"))
    model = ModelConfig(path=str(path))
    pol = FSDPActor(model, cfg, device="cpu", role="actor")
    ref = FSDPActor(model, cfg, device="cpu", role="ref")
    assert {p.dtype for p in ref.module.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pol.module.parameters()} == {torch.float32}  # fp32 master weights
    assert pol.optimizer.defaults["fused"] is True
    data = make_data(path)
    assert torch.equal(ref.compute_log_prob(data)[0], pol.compute_log_prob(data)[0])
    assert max_over_ranks(4, "cpu") == 4  # a real (one-rank gloo) reduction
