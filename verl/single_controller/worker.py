"""Base class of the processes a worker group drives (one Ray actor per rank, or the driver itself).

Rendezvous: without a cluster address every worker runs on this node, so the process group meets
through a file store in a fresh temporary folder and gloo / NCCL talk over the loopback interface:
nothing listens beyond 127.0.0.1 (torch's TCP store would listen on every interface). On a Ray
cluster rank 0 offers ``tcp://<its node IP>:<free port>`` instead.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile

import torch

INIT_METHOD_ENV = "VERL_DIST_INIT_METHOD"
WORKER_LOG_ENV = "VERL_WORKER_LOG"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_env() -> dict[str, str]:
    """Environment that keeps gloo's and NCCL's sockets on the loopback interface."""
    return {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


def redirect_output(path: str) -> None:
    """Send this process's stdout and stderr (Python and native code alike) to ``path`` (appending)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class Worker:
    """Knows its rank and world size (set by the worker group through env vars) and can join the
    torch.distributed process group of its group. A Ray worker writes its output to the file named
    by ``VERL_WORKER_LOG`` (the run folder's ``worker_<rank>.log``)."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        log = os.environ.get(WORKER_LOG_ENV)
        if log:
            redirect_output(log)

    def rendezvous(self, loopback: bool) -> str:
        """The ``init_method`` rank 0 offers its group: a file store on this node when every worker is
        here (``loopback``), else ``tcp://<node IP>:<free port>``."""
        if loopback:
            return f"file://{tempfile.mkdtemp(prefix='verl_pg_')}/store"
        import ray

        host = ray.util.get_node_ip_address()
        return f"tcp://{host}:{free_port(host)}"

    def set_rendezvous(self, init_method: str) -> None:
        """Rank 0 learns the rendezvous it chose (the others get it through the environment)."""
        os.environ[INIT_METHOD_ENV] = init_method

    def init_distributed(self, backend: str) -> None:
        """Join the group's process group (gloo on CPU, nccl on CUDA); idempotent."""
        if torch.distributed.is_initialized():
            return
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(
            backend=backend,
            init_method=os.environ[INIT_METHOD_ENV],
            rank=self.rank,
            world_size=self.world_size,
        )

    def ping(self) -> int:
        return self.rank
