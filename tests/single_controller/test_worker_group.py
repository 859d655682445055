"""Worker group dispatch over real Ray actors (CPU): one-to-all, data-parallel split/concat, gloo."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from verl.protocol import DataProto
from verl.single_controller import Dispatch, Worker, register

pytestmark = pytest.mark.ray


class EchoWorker(Worker):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    @register(Dispatch.ONE_TO_ALL)
    def whoami(self) -> tuple[int, int]:
        return self.rank, self.world_size

    @register(Dispatch.DP_COMPUTE_PROTO)
    def double(self, data: DataProto) -> DataProto:
        x = data.batch["x"] * 2 * self.scale
        tag = np.array([f"r{self.rank}"] * len(data), dtype=object)
        return DataProto.from_dict(tensors={"y": x}, non_tensors={"who": tag})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def expand(self, data: DataProto) -> DataProto:
        """Returns 2 rows per input row, like a rollout with n=2."""
        return DataProto.from_dict(tensors={"y": data.batch["x"].repeat_interleave(2)})

    @register(Dispatch.ONE_TO_ALL)
    def allreduce(self, value: float) -> float:
        self.init_distributed("gloo")
        t = torch.tensor([value * (self.rank + 1)])
        torch.distributed.all_reduce(t)
        return float(t.item())


@pytest.fixture(scope="module")
def group(ray_local):
    from ray import cloudpickle

    from verl.single_controller.worker_group import RayWorkerGroup, ResourcePool, ResourcePoolSpec

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    wg = RayWorkerGroup(EchoWorker, ResourcePool(ResourcePoolSpec(n_workers=2, num_cpus_per_worker=1)),
                        init_kwargs={"scale": 1.0})
    yield wg
    wg.shutdown()


def test_one_to_all_reaches_every_rank(group):
    assert group.whoami() == [(0, 2), (1, 2)]


def test_dp_split_pads_and_concats_in_rank_order(group):
    data = DataProto.from_dict(tensors={"x": torch.arange(5, dtype=torch.float32)})
    out = group.double(data)
    assert len(out) == 5  # 5 rows padded to 6, split 3/3, padding dropped
    assert out.batch["y"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert out.non_tensor_batch["who"].tolist() == ["r0", "r0", "r0", "r1", "r1"]


def test_dp_output_with_several_rows_per_input_is_unpadded(group):
    data = DataProto.from_dict(tensors={"x": torch.arange(3, dtype=torch.float32)})
    out = group.expand(data)
    assert out.batch["y"].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_process_group_spans_the_workers(group):
    # rank0 contributes 1.5, rank1 contributes 3.0
    assert group.allreduce(1.5) == [4.5, 4.5]
