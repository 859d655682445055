"""Ray worker groups: one Ray actor per rank, placed in a resource pool, driven by one controller.

Methods marked with :func:`~verl.single_controller.dispatch.register` on the worker class become
methods of the group (``wg.generate_sequences(batch)``) that fan out according to their dispatch mode
(shared with :class:`~verl.single_controller.local.LocalWorkerGroup`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verl.single_controller.dispatch import WorkerDiedError, WorkerGroup
from verl.single_controller.worker import INIT_METHOD_ENV, WORKER_LOG_ENV, loopback_env

logger = logging.getLogger("verl.single_controller")


@dataclass(frozen=True)
class ResourcePoolSpec:
    """How many workers a pool holds, what each one reserves (CPUs, GPUs) and over how many nodes."""

    n_workers: int
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    nnodes: int = 1

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise ValueError(f"a resource pool needs at least one worker, got n_workers={self.n_workers}")
        if self.nnodes < 1 or self.n_workers % self.nnodes:
            raise ValueError(f"n_workers={self.n_workers} must be a multiple of nnodes={self.nnodes}")

    @property
    def strategy(self) -> str:
        """Placement: PACK on one node; one worker per node (STRICT_SPREAD) or spread over several nodes."""
        if self.nnodes == 1:
            return "PACK"
        return "STRICT_SPREAD" if self.n_workers == self.nnodes else "SPREAD"


class ResourcePool:
    """A Ray placement group with one bundle per worker, placed with ``spec.strategy``."""

    def __init__(self, spec: ResourcePoolSpec, name: str = "global_pool", timeout_s: float = 120.0) -> None:
        self.spec = spec
        bundle: dict[str, float] = {"CPU": spec.num_cpus_per_worker}
        if spec.num_gpus_per_worker > 0:
            bundle["GPU"] = spec.num_gpus_per_worker
        self.pg: PlacementGroup = placement_group([dict(bundle) for _ in range(spec.n_workers)], strategy=spec.strategy,
                                                 name=name)
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            raise RuntimeError(
                f"resource pool {name!r} could not reserve {spec.n_workers} x {bundle} within {timeout_s:.0f} s; "
                f"cluster resources: {ray.cluster_resources()}"
            )

    def release(self) -> None:
        remove_placement_group(self.pg)


def _death_cause(err: Exception) -> str:
    """The short reason in Ray's actor-death message (its exit detail), else its first line."""
    text = str(err)
    for marker in ("Worker exit detail:", "The actor is dead because"):
        if marker in text:
            return text.split(marker, 1)[1].strip().split(". ")[0].strip().rstrip(".")
    return text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(err).__name__


class RayWorkerGroup(WorkerGroup):
    """Creates ``pool.spec.n_workers`` Ray actors of ``worker_cls`` (ranks 0..n-1) and exposes the
    worker's registered methods on itself with their dispatch modes.

    ``loopback``: every worker is on this node (no cluster address), so the process group meets on
    127.0.0.1 (see :mod:`verl.single_controller.worker`). ``log_dir``: each worker writes its output
    (engine logs included) to ``<log_dir>/worker_<rank>.log``.
    """

    def __init__(
        self,
        worker_cls: type,
        pool: ResourcePool,
        init_kwargs: dict[str, Any] | None = None,
        env_vars: dict[str, str] | None = None,
        loopback: bool = True,
        log_dir: str | None = None,
    ) -> None:
        self.pool = pool
        remote_cls = ray.remote(worker_cls)
        init_kwargs = init_kwargs or {}
        self.workers: list[ray.actor.ActorHandle] = []
        self.logs: list[str | None] = []
        init_method: str | None = None
        for rank in range(pool.spec.n_workers):
            log = os.path.join(log_dir, f"worker_{rank}.log") if log_dir else None
            env = {
                "RANK": str(rank),
                "WORLD_SIZE": str(pool.spec.n_workers),
                "LOCAL_RANK": "0",  # Ray restricts each GPU worker to its own device(s)
                **(loopback_env() if loopback else {}),
                **({WORKER_LOG_ENV: log} if log else {}),
                **(env_vars or {}),
            }
            if init_method is not None:
                env[INIT_METHOD_ENV] = init_method
            handle = remote_cls.options(
                num_cpus=pool.spec.num_cpus_per_worker,
                num_gpus=pool.spec.num_gpus_per_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pool.pg, placement_group_bundle_index=rank
                ),
                runtime_env={"env_vars": env},
                name=None,
            ).remote(**init_kwargs)
            self.workers.append(handle)
            self.logs.append(log)
            if rank == 0:
                init_method = self._get([handle.rendezvous.remote(loopback)], "start-up")[0]
                self._get([handle.set_rendezvous.remote(init_method)], "start-up")
        super().__init__(worker_cls, pool.spec.n_workers)

    def _get(self, refs: list[ray.ObjectRef], phase: str) -> list[Any]:
        """Results of ``refs`` (one per rank); a dead worker raises :class:`WorkerDiedError` naming it
        as soon as it is seen, without waiting for the ranks that block on it."""
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as err:  # OOM: Ray killed it
                    rank = refs.index(ref)
                    raise WorkerDiedError(rank, phase, _death_cause(err), self.logs[rank]) from None
        return ray.get(refs)

    def _call(self, method: str, calls: list[tuple[tuple, dict]]) -> list[Any]:
        refs = [getattr(w, method).remote(*args, **kwargs) for w, (args, kwargs) in zip(self.workers, calls)]
        return self._get(refs, method)

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        self.pool.release()
