"""FSDP2 policies from ``actor.fsdp`` and transformers' LR schedules from ``actor.optim`` (hand-computed)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from verl.config.schema import FSDPConfig, OptimConfig
from verl.workers.fsdp_utils import apply_fsdp2, build_lr_scheduler


@pytest.fixture(scope="module")
def process_group():
    """A gloo group of world size 1 (kept if another test made one)."""
    import torch.distributed as dist

    from verl.single_controller.worker import free_port

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    return dist


class _Block(nn.Linear):
    pass


class _Tiny(nn.Module):
    _no_split_modules = ["_Block"]

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _Block(4, 4), _Block(4, 1)

    def forward(self, x):
        return self.b(self.a(x))


def _captured(monkeypatch, fsdp: FSDPConfig) -> list[dict]:
    import torch.distributed.fsdp as fsdp_mod

    calls: list[dict] = []
    monkeypatch.setattr(fsdp_mod, "fully_shard", lambda module, **kw: calls.append(kw) or module)
    model = _Tiny()
    apply_fsdp2(model, model, "cpu", fsdp)
    return calls


def test_each_fsdp_key_changes_what_fully_shard_receives(process_group, monkeypatch):
    from torch.distributed.fsdp import CPUOffloadPolicy

    base = _captured(monkeypatch, FSDPConfig())
    assert len(base) == 3  # two blocks, then the root
    kw = base[-1]
    assert (kw["mp_policy"].param_dtype, kw["mp_policy"].reduce_dtype) == (torch.bfloat16, torch.float32)
    assert kw["reshard_after_forward"] is True and not isinstance(kw["offload_policy"], CPUOffloadPolicy)
    for change, check in [
        ({"param_dtype": "float32"}, lambda k: k["mp_policy"].param_dtype == torch.float32),
        ({"reduce_dtype": "bfloat16"}, lambda k: k["mp_policy"].reduce_dtype == torch.bfloat16),
        ({"reshard_after_forward": False}, lambda k: k["reshard_after_forward"] is False),
        ({"cpu_offload": True}, lambda k: isinstance(k["offload_policy"], CPUOffloadPolicy)),
    ]:
        calls = _captured(monkeypatch, dataclasses.replace(FSDPConfig(), **change))
        assert all(check(k) for k in calls), change


def test_bf16_compute_runs_on_cpu(process_group):
    model = _Tiny()
    apply_fsdp2(model, model, "cpu", FSDPConfig(param_dtype="bfloat16", reshard_after_forward=False, cpu_offload=True))
    out = model(torch.randn(2, 4))
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 and p.grad is not None for p in model.parameters())  # fp32 master weights


def _lrs(optim: OptimConfig, steps: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=optim.lr)
    sched = build_lr_scheduler(opt, optim)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_with_warmup_hand_computed():
    assert _lrs(OptimConfig(lr=1.0, lr_warmup_steps=2), 4) == [0.0, 0.5, 1.0, 1.0]
    # the ratio applies when lr_warmup_steps < 0: 0.5 x 4 steps = 2 warm-up steps
    assert _lrs(OptimConfig(lr=1.0, lr_warmup_steps_ratio=0.5, total_training_steps=4), 3) == [0.0, 0.5, 1.0]


def test_cosine_with_floor_hand_computed():
    got = _lrs(OptimConfig(lr=2.0, lr_scheduler_type="cosine", lr_warmup_steps=1, total_training_steps=5,
                           min_lr_ratio=0.25), 6)
    want = [0.0] + [2.0 * (0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * s / 4))) for s in range(4)] + [0.5]
    assert got == pytest.approx(want, abs=1e-12)


def test_scheduler_resumes_exactly():
    optim = OptimConfig(lr=1.0, lr_scheduler_type="cosine", lr_warmup_steps=2, total_training_steps=10,
                        min_lr_ratio=0.1, num_cycles=0.5)
    full = _lrs(optim, 8)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(opt, optim)
    for _ in range(3):
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_lr_scheduler(opt2, optim)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    resumed = []
    for _ in range(5):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == full[3:]


def test_cosine_needs_total_steps():
    with pytest.raises(ValueError, match="total_training_steps"):
        _lrs(OptimConfig(lr_scheduler_type="cosine"), 1)
