"""Single controller on Ray: resource pools, worker groups, dispatch of calls across workers."""

from verl.single_controller.dispatch import Dispatch, register
from verl.single_controller.worker import Worker

__all__ = ["Dispatch", "register", "Worker"]
