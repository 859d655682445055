"""``reason.backend=local``: the text reasoner in a worker group of its own (``trainer.backend`` local or Ray,
``trainer.n_gpus_per_node x trainer.nnodes`` workers on ``trainer.device``), not in the driver.

Each worker loads the reasoner folder (:class:`recipes.sophia.reasoners.LocalReasoner`, HF) on its device; a
call splits the (question, caption) prompts across the workers. The pipeline releases the policy workers
before it starts this group and starts them again after (a 32B reasoner and the policy do not share GPUs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from recipes.sophia.config import ReasonCfg, SophiaConfig
from recipes.sophia.reasoners import ReasonItem, Sampling, local_prompt, make_reasoner
from verl.protocol import DataProto, object_array
from verl.single_controller import Dispatch, Worker, register
from verl.utils.device import resolve_device


class ReasonerWorker(Worker):
    """One rank of the reasoner's worker group."""

    def __init__(self, reason: ReasonCfg, device: str) -> None:
        super().__init__()
        self.reason_cfg, self.device, self.reasoner = reason, resolve_device(device), None

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> dict:
        self.reasoner = make_reasoner(self.reason_cfg, device=self.device)
        return {"rank": self.rank, "device": self.device}

    @register(Dispatch.DP_COMPUTE_PROTO)
    def generate_reasonings(self, data: DataProto) -> DataProto:
        """``n`` reasonings per ``reasoner_prompt`` row (sampling settings in ``meta_info["sampling"]``)."""
        texts = self.reasoner.generate(list(data.non_tensor_batch["reasoner_prompt"]),
                                       Sampling(**data.meta_info["sampling"]))
        return DataProto.from_dict(non_tensors={"reasonings": object_array(texts)})


class ReasonerGroup:
    """A :class:`~recipes.sophia.reasoners.ReasonerBackend` over the reasoner's worker group."""

    def __init__(self, cfg: SophiaConfig, log_dir: Path) -> None:
        from verl.single_controller.start import start_worker_group

        self.wg = start_worker_group(cfg.trainer, ReasonerWorker, {"reason": cfg.reason, "device": cfg.trainer.device},
                                     log_dir=str(log_dir))
        self.info = self.wg.init_model()
        self.calls = 0

    def reason(self, items: Sequence[ReasonItem], sampling: Sampling) -> list[list[str] | None]:
        data = DataProto.from_dict(non_tensors={"reasoner_prompt": object_array(
            [local_prompt(it.caption, it.question) for it in items])}, meta_info={"sampling": dataclasses.asdict(sampling)})
        out = self.wg.generate_reasonings(data)
        self.calls += len(items) * sampling.n
        return [list(t) for t in out.non_tensor_batch["reasonings"]]

    def close(self) -> None:
        self.wg.shutdown()
