"""Dispatch modes: how a worker-group call is fanned out to workers and how results come back.

A worker method is marked with :func:`register`; :class:`~verl.single_controller.worker_group.RayWorkerGroup`
exposes it on the group with the matching fan-out:

- ``ONE_TO_ALL``: the same arguments go to every worker; the list of results comes back.
- ``DP_COMPUTE_PROTO``: the first argument is a :class:`~verl.protocol.DataProto`; it is padded to a
  multiple of the world size, split into equal contiguous chunks (one per worker), and the workers'
  DataProto results are concatenated in rank order and un-padded.
- ``RANK_ZERO``: the call goes to every worker (collectives need all ranks) and rank 0's result returns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from verl.protocol import DataProto

DISPATCH_ATTR = "_verl_dispatch_mode"


class Dispatch(enum.Enum):
    ONE_TO_ALL = "one_to_all"
    DP_COMPUTE_PROTO = "dp_compute_proto"
    RANK_ZERO = "rank_zero"


def register(mode: Dispatch = Dispatch.ONE_TO_ALL) -> Callable[[Callable], Callable]:
    """Mark a worker method as callable on its worker group with the given dispatch mode."""

    def deco(fn: Callable) -> Callable:
        setattr(fn, DISPATCH_ATTR, mode)
        return fn

    return deco


def split_for_workers(data: DataProto, world_size: int) -> tuple[list[DataProto], int]:
    """Pad ``data`` to a multiple of ``world_size`` and split it into one chunk per worker."""
    padded, pad = data.pad_to_divisor(world_size)
    return padded.chunk(world_size), pad


def merge_from_workers(outputs: list[Any], pad: int, padded_len: int) -> Any:
    """Concatenate per-worker DataProto outputs (rank order) and drop the padding rows.

    A method may return k rows per input row (rollout returns n samples per prompt); the padding
    rows are then the last ``pad * k`` rows.
    """
    if not outputs or not isinstance(outputs[0], DataProto):
        return outputs
    merged = DataProto.concat(outputs)
    if not pad:
        return merged
    rows_per_input, rem = divmod(len(merged), padded_len)
    if rem:
        raise ValueError(f"worker outputs have {len(merged)} rows, not a multiple of the {padded_len} inputs")
    return merged.unpad(pad * rows_per_input)
