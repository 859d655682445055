"""Single controller: worker groups (Ray actors or the driver process), resource pools, dispatch of calls."""

from verl.single_controller.dispatch import Dispatch, register
from verl.single_controller.worker import Worker

__all__ = ["Dispatch", "register", "Worker"]
