"""The local worker group: the worker in this process, the same dispatch as the Ray group, no Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from verl.protocol import DataProto
from verl.single_controller import Dispatch, Worker, register
from verl.single_controller.local import LocalWorkerGroup

ROOT = Path(__file__).resolve().parents[2]


class EchoWorker(Worker):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    @register(Dispatch.ONE_TO_ALL)
    def whoami(self) -> tuple[int, int]:
        return self.rank, self.world_size

    @register(Dispatch.DP_COMPUTE_PROTO)
    def expand(self, data: DataProto) -> DataProto:
        """Returns 2 rows per input row, like a rollout with n=2."""
        y = data.batch["x"].repeat_interleave(2) * self.scale
        return DataProto.from_dict(tensors={"y": y}, non_tensors={"who": np.array([f"r{self.rank}"] * len(y),
                                                                                   dtype=object)})

    @register(Dispatch.RANK_ZERO)
    def allreduce(self, value: float) -> float:
        self.init_distributed("gloo")
        t = torch.tensor([value])
        torch.distributed.all_reduce(t)
        return float(t.item())


def test_local_group_dispatches_like_the_ray_group():
    wg = LocalWorkerGroup(EchoWorker, init_kwargs={"scale": 3.0})
    try:
        assert wg.whoami() == [(0, 1)]
        out = wg.expand(DataProto.from_dict(tensors={"x": torch.arange(3, dtype=torch.float32)}))
        assert out.batch["y"].tolist() == [0.0, 0.0, 3.0, 3.0, 6.0, 6.0]
        assert set(out.non_tensor_batch["who"]) == {"r0"}
        assert wg.allreduce(1.5) == 1.5  # a real process group of world size 1
        assert torch.distributed.is_initialized()
    finally:
        wg.shutdown()
    assert not torch.distributed.is_initialized()


def test_the_local_path_does_not_import_ray():
    code = ("import sys; import verl.trainer.main, verl.trainer.fit, verl.workers.hybrid, "
            "verl.single_controller.local; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_death_cause_is_the_exit_detail():
    from verl.single_controller.worker_group import _death_cause

    text = ("The actor died unexpectedly before finishing this task.\n\tclass_name: ActorRolloutRefWorker\n\t"
            "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit "
            "detail: Worker unexpectedly exits with a connection error code 2. End of file. There are some "
            "potential root causes.")
    assert _death_cause(RuntimeError(text)) == "Worker unexpectedly exits with a connection error code 2"
    assert _death_cause(RuntimeError("boom\nmore")) == "boom"
    oom = ("1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 127.0.0.1) was "
           "21.48GB used / 23.54GB limit (0.912497)\nOOM kill reason: ...")
    assert _death_cause(RuntimeError(oom)) == "1 worker(s) were killed due to the node running low on memory"
