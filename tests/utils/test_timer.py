"""Timer, seeding / RNG state, device helpers."""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import verl.utils.timer as timer_mod
from verl.utils.device import dist_backend, resolve_device
from verl.utils.seed import rng_state, set_rng_state, set_seed
from verl.utils.timer import Timer, timed


def test_timed_records_and_accumulates(monkeypatch):
    clock = iter([10.0, 10.25, 20.0, 20.5, 30.0, 31.0])
    monkeypatch.setattr(timer_mod, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    metrics: dict[str, float] = {"other": 1.0}
    with timed("gen", metrics) as t:
        pass
    assert t.elapsed == 0.25 and metrics == {"other": 1.0, "timing_s/gen": 0.25}
    with timed("gen", metrics):
        pass
    assert metrics["timing_s/gen"] == 0.75  # same phase twice in a step adds up
    with pytest.raises(RuntimeError), timed("update_actor", metrics):
        raise RuntimeError("boom")
    assert metrics["timing_s/update_actor"] == 1.0  # recorded even when the block raises


def test_timer_real_clock_without_dict():
    with Timer() as t:
        time.sleep(0.01)
    assert 0.009 <= t.elapsed < 1.0
    with pytest.raises(ValueError, match="name"), Timer(metrics={}):
        pass


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_set_seed_reproducible():
    set_seed(123)
    a = _draws()
    set_seed(123)
    assert _draws() == a
    set_seed(124)
    assert _draws() != a
    with pytest.raises(TypeError):
        set_seed("1")  # type: ignore[arg-type]


def test_rng_state_roundtrip_through_json():
    set_seed(7)
    _draws()
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    state = json.loads(json.dumps(rng_state()))  # must be JSON-serializable
    expected = [_draws() for _ in range(3)] + [float(np.random.randn())]
    set_seed(999)
    set_rng_state(state)
    assert [_draws() for _ in range(3)] + [float(np.random.randn())] == expected
    with pytest.raises(KeyError, match="numpy"):
        set_rng_state({"python": state["python"], "torch": state["torch"]})


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    assert dist_backend("cpu") == "gloo" and dist_backend("cuda") == "nccl" and dist_backend("cuda:1") == "nccl"
    with pytest.raises(ValueError, match="mps"):
        dist_backend("mps")
