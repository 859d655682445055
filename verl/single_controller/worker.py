"""Base class of the processes a worker group drives (one Ray actor per rank)."""

from __future__ import annotations

import os
import socket

import torch


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Worker:
    """Knows its rank and world size (set by the worker group through env vars) and can join the
    torch.distributed process group of its group."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))

    def master_address(self) -> tuple[str, int]:
        """Address and a free port on this worker's node, used by rank 0 as the rendezvous point."""
        try:
            import ray

            host = ray.util.get_node_ip_address()
        except Exception:  # not inside Ray
            host = "127.0.0.1"
        return host, free_port("0.0.0.0" if host != "127.0.0.1" else host)

    def set_master(self, host: str, port: int) -> None:
        """Rank 0 learns the rendezvous address it chose (the others get it through env vars)."""
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, str(port)

    def init_distributed(self, backend: str) -> None:
        """Join the group's process group (gloo on CPU, nccl on CUDA); idempotent."""
        if torch.distributed.is_initialized():
            return
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(
            backend=backend,
            init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
            rank=self.rank,
            world_size=self.world_size,
        )

    def ping(self) -> int:
        return self.rank
