"""On-policy GRPO with gold rewards on the SOPHIA training questions: the baseline SOPHIA is compared with.

A small in-process loop (world size 1): the policy samples G answers per question with the evaluation
prompt (``stages.policy_prompt``) through ``make_rollout("hf")``, the rule-based verifier of
``recipes.sophia.verify`` scores them against the gold answer, ``verl.algos.advantage``'s ``grpo`` turns
scores into advantages, ``FSDPActor.update_policy`` takes one clipped-surrogate step per batch (no KL,
vision tower frozen as in the SOPHIA update), and the new weights go back into the rollout engine. A
batch in which every group has identical rewards carries no signal and is skipped (counted).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.sophia.runio import stamp_is_fresh, write_json, write_stamp
from recipes.sophia.stages import Question, policy_prompt
from recipes.sophia.verify import reasoning_reward
from verl.protocol import DataProto

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


def run_grpo(init_model: str | Path, questions: list[Question], out_dir: str | Path, g: GRPOCfg,
             system_prompt: str | None, tracker: Any = None) -> dict[str, Any]:
    """Train from ``init_model`` and export to ``out_dir`` (cached by a stamp); returns run statistics."""
    from recipes.sophia.vlm_data import actor_config, make_actor
    from verl.algos.advantage import get_adv_estimator
    from verl.workers.rollout import make_rollout

    out = Path(out_dir)
    stamp = {"init": str(init_model), "cfg": g.__dict__, "questions": [q.uid for q in questions],
             "system_prompt": system_prompt}
    if stamp_is_fresh(out, stamp) and (out / "grpo.json").is_file():
        return json.loads((out / "grpo.json").read_text())
    acfg = actor_config(g.lr, micro_batch=16, total_steps=g.steps, scheduler="constant", min_lr_ratio=0.0)
    acfg.ppo_mini_batch_size = g.prompts_per_step  # one optimizer step per rollout batch
    torch.manual_seed(g.seed)
    actor = make_actor(str(init_model), acfg)
    engine = make_rollout("hf", model_path=str(init_model), device="cpu", seed=g.seed)
    adv_fn = get_adv_estimator("grpo")
    rng = np.random.default_rng(g.seed)
    stats: dict[str, Any] = {"steps": g.steps, "updated_steps": 0, "reward_mean": []}
    t0 = time.perf_counter()
    for step in range(1, g.steps + 1):
        batch = [questions[i] for i in rng.choice(len(questions), size=min(g.prompts_per_step, len(questions)),
                                                  replace=False)]
        data = DataProto.from_dict(non_tensors={"prompt": [policy_prompt(q, system_prompt) for q in batch],
                                                "images": [list(q.images) for q in batch],
                                                "uid": [q.uid for q in batch]})
        data.meta_info.update({"n": g.group, "do_sample": True, "temperature": g.temperature, "top_p": 1.0,
                               "top_k": -1, "max_new_tokens": g.max_new_tokens, "seed": g.seed * 100_003 + step})
        roll = engine.generate(data)
        gold = {q.uid: q.gold for q in batch}
        uids = list(roll.non_tensor_batch["uid"])
        scores = torch.tensor([reasoning_reward(str(t), gold[u])
                               for t, u in zip(roll.non_tensor_batch["response_text"], uids)])
        stats["reward_mean"].append(float(scores.mean()))
        metrics = {"grpo/reward_mean": float(scores.mean())}
        groups = scores.view(len(batch), g.group)
        if bool((groups.max(1).values > groups.min(1).values).any()):
            adv, _ = adv_fn(scores, uids, roll.batch["response_mask"])
            roll.batch["old_log_probs"] = actor.compute_log_prob(roll)[0]
            roll.batch["advantages"] = adv
            metrics.update(actor.update_policy(roll))
            engine.load_weights(actor.state_dict_for_sync())
            stats["updated_steps"] += 1
        if tracker is not None:
            tracker.log(metrics, step=step)
        logger.info("grpo step %d/%d reward %.3f (%.0f s)", step, g.steps, scores.mean(), time.perf_counter() - t0)
    actor.export_hf(out)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "grpo.json", stats)
    write_stamp(out, stamp)
    return stats
