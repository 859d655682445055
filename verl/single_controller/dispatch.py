"""Dispatch modes: how a worker-group call is fanned out to workers and how results come back.

A worker method is marked with :func:`register`; a :class:`WorkerGroup` (Ray actors:
:class:`~verl.single_controller.worker_group.RayWorkerGroup`; the driver process:
:class:`~verl.single_controller.local.LocalWorkerGroup`) exposes it on the group with the matching fan-out:

- ``ONE_TO_ALL``: the same arguments go to every worker; the list of results comes back.
- ``DP_COMPUTE_PROTO``: the first argument is a :class:`~verl.protocol.DataProto`; it is padded to a
  multiple of the world size, split into equal contiguous chunks (one per worker), and the workers'
  DataProto results are concatenated in rank order and un-padded.
- ``RANK_ZERO``: the call goes to every worker (collectives need all ranks) and rank 0's result returns.
"""

from __future__ import annotations

import enum
import functools
import inspect
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


class WorkerDiedError(RuntimeError):
    """A worker process died while running a method of the group."""

    def __init__(self, rank: int, phase: str, cause: str, log: str | None) -> None:
        self.rank, self.phase, self.cause, self.log = rank, phase, cause, log
        super().__init__(f"worker rank {rank} died during {phase}: {cause} (log: {log or 'Ray session logs'})")


class WorkerGroup:
    """Exposes the registered methods of ``worker_cls`` on the group with their fan-out.

    Subclasses say how one call per worker is made (:meth:`_call`); the dispatch modes, the
    split/pad/concat of data-parallel calls and the method binding are shared here.
    """

    def __init__(self, worker_cls: type, world_size: int) -> None:
        self.worker_cls = worker_cls
        self.world_size = world_size
        self._bind_registered_methods()

    def _call(self, method: str, calls: list[tuple[tuple, dict]]) -> list[Any]:
        """Call ``method`` on worker ``r`` with ``calls[r]`` = (args, kwargs); results in rank order."""
        raise NotImplementedError

    def execute_all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``method`` with the same arguments on every worker; results in rank order."""
        return self._call(method, [(args, kwargs)] * self.world_size)

    def execute_dp(self, method: str, data: DataProto, *args: Any, **kwargs: Any) -> Any:
        """Split ``data`` across the workers, call ``method`` on each chunk, concatenate the results."""
        chunks, pad = split_for_workers(data, self.world_size)
        outputs = self._call(method, [((chunk, *args), kwargs) for chunk in chunks])
        return merge_from_workers(outputs, pad, len(data) + pad)

    def execute_rank_zero(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.execute_all(method, *args, **kwargs)[0]

    def _bind_registered_methods(self) -> None:
        for name, fn in inspect.getmembers(self.worker_cls, predicate=inspect.isfunction):
            mode = getattr(fn, DISPATCH_ATTR, None)
            if mode is None:
                continue
            if hasattr(self, name):
                raise AttributeError(f"worker method {name!r} clashes with a {type(self).__name__} attribute")
            runner = {
                Dispatch.ONE_TO_ALL: self.execute_all,
                Dispatch.DP_COMPUTE_PROTO: self.execute_dp,
                Dispatch.RANK_ZERO: self.execute_rank_zero,
            }[mode]
            setattr(self, name, functools.partial(runner, name))

    def shutdown(self) -> None:
        """Stop the workers and free what they hold."""
        raise NotImplementedError
