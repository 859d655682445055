"""Ray worker groups: one Ray actor per rank, placed in a resource pool, driven by one controller.

Methods marked with :func:`~verl.single_controller.dispatch.register` on the worker class become
methods of the group (``wg.generate_sequences(batch)``) that fan out according to their dispatch mode.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verl.protocol import DataProto
from verl.single_controller.dispatch import DISPATCH_ATTR, Dispatch, merge_from_workers, split_for_workers

logger = logging.getLogger("verl.single_controller")


@dataclass(frozen=True)
class ResourcePoolSpec:
    """How many workers a pool holds and what each one reserves (CPUs, GPUs)."""

    n_workers: int
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise ValueError(f"a resource pool needs at least one worker, got n_workers={self.n_workers}")


class ResourcePool:
    """A Ray placement group with one bundle per worker (packed, spread over nodes when needed)."""

    def __init__(self, spec: ResourcePoolSpec, name: str = "global_pool", timeout_s: float = 120.0) -> None:
        self.spec = spec
        bundle: dict[str, float] = {"CPU": spec.num_cpus_per_worker}
        if spec.num_gpus_per_worker > 0:
            bundle["GPU"] = spec.num_gpus_per_worker
        self.pg: PlacementGroup = placement_group([dict(bundle) for _ in range(spec.n_workers)], strategy="PACK", name=name)
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            raise RuntimeError(
                f"resource pool {name!r} could not reserve {spec.n_workers} x {bundle} within {timeout_s:.0f} s; "
                f"cluster resources: {ray.cluster_resources()}"
            )

    def release(self) -> None:
        remove_placement_group(self.pg)


class RayWorkerGroup:
    """Creates ``pool.spec.n_workers`` Ray actors of ``worker_cls`` (ranks 0..n-1) and exposes the
    worker's registered methods on itself with their dispatch modes."""

    def __init__(
        self,
        worker_cls: type,
        pool: ResourcePool,
        init_kwargs: dict[str, Any] | None = None,
        env_vars: dict[str, str] | None = None,
    ) -> None:
        self.pool = pool
        self.world_size = pool.spec.n_workers
        self.worker_cls = worker_cls
        remote_cls = ray.remote(worker_cls)
        init_kwargs = init_kwargs or {}
        self.workers: list[ray.actor.ActorHandle] = []
        master: tuple[str, int] | None = None
        for rank in range(self.world_size):
            env = {
                "RANK": str(rank),
                "WORLD_SIZE": str(self.world_size),
                "LOCAL_RANK": "0",  # Ray restricts each GPU worker to its own device(s)
                **(env_vars or {}),
            }
            if master is not None:
                env["MASTER_ADDR"], env["MASTER_PORT"] = master[0], str(master[1])
            handle = remote_cls.options(
                num_cpus=pool.spec.num_cpus_per_worker,
                num_gpus=pool.spec.num_gpus_per_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pool.pg, placement_group_bundle_index=rank
                ),
                runtime_env={"env_vars": env},
                name=None,
            ).remote(**init_kwargs)
            if rank == 0:
                master = ray.get(handle.master_address.remote())
                ray.get(handle.set_master.remote(*master))
            self.workers.append(handle)
        self._bind_registered_methods()

    # ------------------------------------------------------------------ fan-out primitives
    def execute_all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``method`` with the same arguments on every worker; results in rank order."""
        return ray.get([getattr(w, method).remote(*args, **kwargs) for w in self.workers])

    def execute_dp(self, method: str, data: DataProto, *args: Any, **kwargs: Any) -> Any:
        """Split ``data`` across the workers, call ``method`` on each chunk, concatenate the results."""
        chunks, pad = split_for_workers(data, self.world_size)
        padded_len = len(data) + pad
        refs = [getattr(w, method).remote(chunk, *args, **kwargs) for w, chunk in zip(self.workers, chunks)]
        return merge_from_workers(ray.get(refs), pad, padded_len)

    def execute_rank_zero(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.execute_all(method, *args, **kwargs)[0]

    def _bind_registered_methods(self) -> None:
        for name, fn in inspect.getmembers(self.worker_cls, predicate=inspect.isfunction):
            mode = getattr(fn, DISPATCH_ATTR, None)
            if mode is None:
                continue
            if hasattr(self, name):
                raise AttributeError(f"worker method {name!r} clashes with a RayWorkerGroup attribute")
            runner = {
                Dispatch.ONE_TO_ALL: self.execute_all,
                Dispatch.DP_COMPUTE_PROTO: self.execute_dp,
                Dispatch.RANK_ZERO: self.execute_rank_zero,
            }[mode]
            setattr(self, name, functools.partial(runner, name))

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        self.pool.release()
