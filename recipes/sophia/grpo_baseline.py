"""On-policy GRPO with gold rewards on the SOPHIA training questions: the baseline SOPHIA is compared with.

It runs on the framework's own trainer (:class:`verl.trainer.fit.Trainer`, one CPU worker on the local
backend, HF rollout): the policy samples ``group`` answers per question with the evaluation prompt
(``stages.policy_prompt``); :class:`GoldRewardMethod` scores them 1/0 with the rule-based verifier of
``recipes.sophia.verify`` against the gold answer (a supervised baseline: unlike TTRV it reads the labels of
its questions, on purpose, and only it does); ``algorithm.adv_estimator=grpo`` turns scores into
advantages; the actor takes one clipped-surrogate step per batch with no KL and no reference policy,
vision tower frozen as in the SOPHIA update. A batch in which every group has identical rewards has zero
advantages: its step changes the weights only through weight decay.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recipes.sophia.runio import stamp_is_fresh, write_json, write_stamp
from recipes.sophia.stages import Question, policy_prompt
from recipes.sophia.verify import reasoning_reward
from verl.data.formats import Record
from verl.protocol import DataProto
from verl.trainer.method import Scores

logger = logging.getLogger(__name__)


@dataclass
class GRPOCfg:
    steps: int = 24
    prompts_per_step: int = 16
    group: int = 4
    lr: float = 1e-4
    temperature: float = 1.0
    max_new_tokens: int = 72
    seed: int = 0


class GoldRewardMethod:
    """Training method (``verl.trainer.method`` interface): R = 1 iff the boxed answer verifies against the gold."""

    def __init__(self, gold: dict[str, str]) -> None:
        self.gold = gold
        self.reward_mean: list[float] = []

    def score(self, batch: DataProto, aux: DataProto | None = None) -> Scores:
        nt = batch.non_tensor_batch
        scores = np.array([reasoning_reward(str(t), self.gold[str(u)]) for t, u in zip(nt["response_text"], nt["uid"])],
                          dtype=np.float32)
        self.reward_mean.append(float(scores.mean()))
        return Scores(scores)

    def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]:
        return {"grpo/reward_mean": self.reward_mean[-1]}

    def train_rows(self, batch: DataProto, step: int) -> np.ndarray:
        return np.arange(len(batch))


def grpo_config(init_model: str | Path, out: Path, g: GRPOCfg, n_questions: int) -> Any:
    """The trainer config of the baseline (``verl/config/ppo_trainer.yaml`` plus these overrides)."""
    from verl.config.loader import load_config

    batch = min(g.prompts_per_step, n_questions)
    a, r = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    return load_config("ppo_trainer", [
        f"actor_rollout_ref.model.path={init_model}", "actor_rollout_ref.model.dtype=float32",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false", "actor_rollout_ref.model.freeze_vision_tower=true",
        f"{a}.optim.lr={g.lr}", f"{a}.optim.weight_decay=0.05", f"{a}.optim.lr_scheduler_type=constant",
        f"{a}.ppo_mini_batch_size={batch}", f"{a}.ppo_micro_batch_size_per_gpu=16", f"{a}.use_kl_loss=false",
        f"{a}.kl_loss_coef=0.0", f"{a}.fsdp.param_dtype=float32", "actor_rollout_ref.ref.enable=false",
        f"{r}.name=hf", f"{r}.n={g.group}", f"{r}.n_votes={g.group}", f"{r}.temperature={g.temperature}",
        f"{r}.val_sample_n=1", f"data.max_response_length={g.max_new_tokens}", "data.max_prompt_length=2048",
        f"data.train_batch_size={batch}", f"data.seed={g.seed}", "trainer.backend=local", "trainer.device=cpu",
        "trainer.n_gpus_per_node=1", f"trainer.total_training_steps={g.steps}", "trainer.val_before_train=false",
        "trainer.resume_mode=disable", f"trainer.default_local_dir={out / 'checkpoints'}", f"trainer.seed={g.seed}",
        "trainer.logger=[jsonl]", f"trainer.log_dir={out / 'logs'}", "trainer.project_name=sophia",
        "trainer.experiment_name=grpo",
        "trainer.guard.enable=false"])  # the guard watches vote statistics; this method reports none


def run_grpo(init_model: str | Path, questions: list[Question], out_dir: str | Path, g: GRPOCfg,
             system_prompt: str | None, tracker: Any = None) -> dict[str, Any]:
    """Train from ``init_model`` and export to ``out_dir`` (cached by a stamp); returns run statistics."""
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    out = Path(out_dir)
    stamp = {"init": str(init_model), "cfg": g.__dict__, "questions": [q.uid for q in questions],
             "system_prompt": system_prompt, "trainer": "verl"}
    if stamp_is_fresh(out, stamp) and (out / "grpo.json").is_file():
        return json.loads((out / "grpo.json").read_text())
    cfg = grpo_config(init_model, out, g, len(questions))
    records = [Record(uid=q.uid, index=i, data_source="sophia_train", prompt=policy_prompt(q, system_prompt),
                      images=list(q.images)) for i, q in enumerate(questions)]  # no labels: the method holds them
    method = GoldRewardMethod({q.uid: q.gold for q in questions})
    own = tracker is None
    tracker = tracker or Tracker("sophia", "grpo", ["jsonl"], log_dir=out / "logs", config=g.__dict__)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, records, [], tracker, method=method)
    try:
        trainer.init_workers()
        trainer.fit()
        trainer.wg.export_hf(str(out))
    finally:
        trainer.close()
        if own:
            tracker.finish()
    stats = {"steps": g.steps, "reward_mean": method.reward_mean, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "grpo.json", stats)
    write_stamp(out, stamp)
    return stats
