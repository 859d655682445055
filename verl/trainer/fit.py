"""The single controller: one readable GRPO loop over a worker group (Ray actors or this process).

``fit`` reads top to bottom: generate → score (the method) → old/ref log-probs → advantages → update →
sync weights → (validate, checkpoint) → log. Each phase is one call on the worker group (or one pure
function on the driver) and is timed by name (``timing_s/<phase>``). The method (``algorithm.method``,
:mod:`verl.trainer.method`) scores the samples, names the rows that train and adds its metrics.

Ground-truth labels live only in ``self._labels`` and are read only by the metrics code (and the
method's ``metrics``); :func:`records_to_prompts` looks at them only to drop ``extra`` fields that spell
them, so nothing sent to a worker or to a reward function contains them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verl.algos.advantage import get_adv_estimator
from verl.algos.rollout_correction import correction_enabled, rollout_correction
from verl.checkpoint import STATE_FILE, CheckpointManager, list_steps, parse_step, verify_checkpoint
from verl.config.loader import derive_total_steps
from verl.config.schema import RLConfig
from verl.data.dataset import make_dataloader
from verl.data.formats import Record
from verl.logging.tracker import Tracker
from verl.protocol import DataProto
from verl.rewards.registry import batch_answers, without_labels
from verl.trainer import metrics as M
from verl.trainer.guards import CollapseGuard, step_stats
from verl.trainer.method import Method, checked_scores, make_method
from verl.trainer.predictions import validation_rows, write_jsonl
from verl.utils.seed import rng_state, set_rng_state
from verl.utils.timer import timed
from verl.workers.actor import old_log_prob_in_update
from verl.workers.rollout.base import SamplingSpec
from verl.workers.rollout.generate import generate, prompt_batch, sampling_meta

logger = logging.getLogger("verl.trainer")


def records_to_prompts(records: list[Record]) -> DataProto:
    """Prompt batch for the workers: chat messages, image refs (paths/bytes), ids and the records'
    non-label metadata (data source, options, ``extra`` minus what spells the answer); no labels."""
    return prompt_batch([r.prompt for r in records], [r.images for r in records], [r.uid for r in records],
                        index=[r.index for r in records], data_source=[r.data_source for r in records],
                        options=[dict(r.options or {}) for r in records],
                        extra=[without_labels(r.extra, r.ground_truth, r.options) for r in records])


class Trainer:
    """Drives one ``ActorRolloutRefWorker`` group through GRPO on unlabeled prompts."""

    def __init__(self, config: RLConfig, train_records: list[Record], val_records: list[Record], tracker: Tracker,
                 method: Method | None = None):
        """``method``: a method object for programmatic runs (default: the one ``algorithm.method`` names)."""
        self.config = config
        self.train_records = train_records
        self.val_records = val_records
        self.tracker = tracker
        # The one place labels are kept: read only by the metrics helpers.
        self._labels = M.normalized_labels([*train_records, *val_records])
        self.method = method or make_method(config)  # score / metrics / train_rows (verl.trainer.method)
        self.method_name = type(method).__name__ if method is not None else config.algorithm.method
        self.adv_fn = get_adv_estimator(config.algorithm.adv_estimator)
        self.dataloader = make_dataloader(
            train_records,
            batch_size=config.data.train_batch_size,
            shuffle=config.data.shuffle,
            seed=config.data.seed,
            drop_last=False,
        )
        self.steps_per_epoch = len(self.dataloader)
        self.total_steps = derive_total_steps(config, len(train_records))  # before the workers build schedules
        self.global_step = 0
        self.base_val: dict[str, float] = {}  # validation before training (trainer state: kept on resume)
        self.last_val: dict[str, float] = {}  # the latest validation
        self.wg = None
        self.worker_info: list[dict] = []
        self.ckpt = CheckpointManager(config.trainer.default_local_dir, keep=config.trainer.max_actor_ckpt_to_keep)
        self.guard = CollapseGuard(config.trainer.guard) if config.trainer.guard.enable else None
        self.guard_events: list[dict] = []
        self.correct_rollout = correction_enabled(config.algorithm.rollout_correction)  # needs old log-probs

    # ------------------------------------------------------------------ set-up
    def init_workers(self) -> None:
        """Start the worker group ``trainer.backend`` names and build the models in it."""
        from verl.single_controller.start import start_worker_group
        from verl.workers.hybrid import ActorRolloutRefWorker

        self.wg = start_worker_group(self.config.trainer, ActorRolloutRefWorker, {"config": self.config},
                                     log_dir=str(self.tracker.run_dir))
        self.worker_info = self.wg.init_model()
        logger.info("workers ready: %s", self.worker_info)

    def close(self) -> None:
        """Stop the worker group and free its resources (a Ray instance stays up)."""
        if self.wg is not None:
            self.wg.shutdown()
            self.wg = None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        """Train for ``total_steps`` steps; returns the base → adapted validation summary.

        The last step validates; each step's row is logged before its checkpoint is saved, so a run
        resumed from step k re-logs exactly the steps after k (the tracker drops the later rows).
        """
        t = self.config.trainer
        self._maybe_resume()
        self.tracker.rewind(self.global_step if self.global_step > 0 else -1)
        if self.guard is not None and t.guard.action == "rollback" and self.ckpt.latest_step() is None:
            self.save_checkpoint()  # the base: a rollback target that passes by definition
        if t.val_before_train and self.global_step == 0 and self.val_records:
            self.base_val = self.validate()
            self.tracker.log(self.base_val, step=0)
        progress = self.tracker.progress(self.total_steps, initial=self.global_step)
        stop = False
        while self.global_step < self.total_steps and not stop:
            for batch_records in self.dataloader:
                self.global_step += 1
                metrics, timing = self.train_step(batch_records)
                stop = self._act_on_guard(metrics)
                last = stop or self.global_step >= self.total_steps
                if self.val_records and (last or (t.test_freq > 0 and self.global_step % t.test_freq == 0)):
                    with timed("testing", timing):
                        self.last_val = self.validate()
                    metrics.update(self.last_val)
                metrics.update(timing)
                self.tracker.log(metrics, step=self.global_step)
                if t.save_freq > 0 and (last or self.global_step % t.save_freq == 0):
                    self.save_checkpoint()
                progress.update(1)
                if last:
                    break
        progress.close()
        summary = M.base_vs_adapted(self.base_val, self.last_val or self.base_val)
        self.tracker.summary(summary)
        return summary

    def train_step(self, batch_records: list[Record]) -> tuple[dict[str, float], dict[str, float]]:
        """One GRPO step on a batch of unlabeled prompts; returns (metrics, timing)."""
        rollout = self.config.actor_rollout_ref.rollout
        timing: dict[str, float] = {}
        with timed("step", timing):
            prompts = records_to_prompts(batch_records)
            prompts.meta_info.update(sampling_meta(self._sampling(rollout.n_votes, greedy=False)))
            with timed("gen", timing):
                batch = self.wg.generate_sequences(prompts)
                aux = self._aux_rollouts(prompts)
            token_stats = tuple(getattr(self.method, "token_stats", ()))
            if token_stats:  # the score reads the policy's token statistics: one old-log-prob pass over all samples
                with timed("old_log_prob", timing):
                    batch.meta_info["token_stats"] = list(token_stats)
                    batch = batch.union(self.wg.compute_log_prob(batch))
            with timed("reward", timing):
                scored = self.method.score(batch, aux)
                scores = checked_scores(scored.values, batch, self.method_name)
                batch.batch["token_level_scores"] = self._scores_on_last_token(batch, scores)
                if scored.advantage_weights is not None:
                    weights = checked_scores(scored.advantage_weights, batch, self.method_name, "advantage weight")
                    batch.batch["advantage_weights"] = torch.as_tensor(weights)
                method_metrics = self.method.metrics(batch, self._labels)  # all votes; labels only reported
                batch = batch[self.method.train_rows(batch, self.global_step)]
            if "old_log_probs" not in batch.batch.keys() and (self.correct_rollout or not old_log_prob_in_update(
                    self.config.actor_rollout_ref.actor, self.config.data.train_batch_size)):
                with timed("old_log_prob", timing):  # else the on-policy update takes them from its own forward
                    batch = batch.union(self.wg.compute_log_prob(batch))
            if self.config.actor_rollout_ref.ref.enable:
                with timed("ref", timing):
                    batch = batch.union(self.wg.compute_ref_log_prob(batch))
            with timed("adv", timing):
                scores = batch.batch["token_level_scores"].sum(-1)
                adv, returns = self.adv_fn(
                    scores,
                    batch.non_tensor_batch["uid"],
                    batch.batch["response_mask"],
                    norm_adv_by_std=self.config.algorithm.norm_adv_by_std_in_grpo,
                    epsilon=self.config.algorithm.epsilon,
                )
                if "advantage_weights" in batch.batch:  # the method's per-row weights (e.g. a consensus gate)
                    adv = adv * batch.batch["advantage_weights"][:, None]
                batch.batch["advantages"], batch.batch["returns"] = adv, returns
            update_batch, correction_metrics = self._rollout_correction(batch)
            with timed("update_actor", timing):
                actor_metrics = self.wg.update_actor(update_batch)
            with timed("update_weights", timing):
                self.wg.sync_weights()
            if callable(getattr(self.method, "after_update", None)):
                with timed("after_update", timing):
                    self.method.after_update(self.wg, self.global_step)
        metrics = M.mean_over_workers(actor_metrics)
        metrics.update(M.batch_metrics(batch, timing))
        metrics.update(correction_metrics)
        metrics.update(method_metrics)
        if self.guard is not None:
            metrics.update(self.guard.observe(step_stats(scored.groups, metrics["response_length/mean"])))
        metrics["training/global_step"] = self.global_step
        metrics["training/epoch"] = self.dataloader.sampler.epoch
        return metrics, timing

    def _rollout_correction(self, batch: DataProto) -> tuple[DataProto, dict[str, float]]:
        """The batch the update reads (rollout correction applied: ``rollout_is_weights`` and the response
        mask after rejection) and the ``rollout_corr/`` metrics; diagnostics only when correction is off, none
        without old log-probs. ``batch`` itself keeps its response mask (response-length metrics)."""
        if "old_log_probs" not in batch.batch.keys() or "rollout_log_probs" not in batch.batch.keys():
            return batch, {}
        weights, mask, metrics = rollout_correction(batch.batch["old_log_probs"], batch.batch["rollout_log_probs"],
                                                    batch.batch["response_mask"], self.config.algorithm.rollout_correction)
        if not self.correct_rollout:
            return batch, metrics
        tensors = {**batch.batch, "response_mask": mask}
        if weights is not None:
            tensors["rollout_is_weights"] = weights
        update = DataProto.from_dict(tensors=tensors, non_tensors=dict(batch.non_tensor_batch),
                                     meta_info=dict(batch.meta_info))
        return update, metrics

    def _aux_rollouts(self, prompts: DataProto) -> DataProto | None:
        """Samples of the method's auxiliary prompts (``aux_prompts``: e.g. augmented views), sampled like the
        votes with the number per prompt the method asks for; None when it has none."""
        make = getattr(self.method, "aux_prompts", None)
        request = make(prompts, self.global_step) if callable(make) else None
        if request is None:
            return None
        aux_prompts, n = request
        aux_prompts.meta_info.update(sampling_meta(self._sampling(n, greedy=False)))
        return self.wg.generate_sequences(aux_prompts)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Greedy accuracy per item, and sampled mean@N / maj@N, per data source.

        Also writes ``val_predictions_step<N>.jsonl`` (answers and vote histograms) in the run folder.
        """
        rollout = self.config.actor_rollout_ref.rollout
        greedy = self._generate(self.val_records, self._sampling(1, greedy=True))
        sampled = None
        if rollout.val_sample_n > 1:
            sampled = self._generate(self.val_records, self._sampling(rollout.val_sample_n, greedy=False))
        write_jsonl(self.tracker.run_dir / f"val_predictions_step{self.global_step}.jsonl", validation_rows(greedy, sampled))
        return M.validation_metrics(greedy, sampled, self._labels, rollout.val_sample_n)

    def _generate(self, records: list[Record], spec: SamplingSpec) -> DataProto:
        """Responses (non-tensor columns) and their extracted answers, ``data.val_batch_size`` prompts per call."""
        out = generate(self.wg.generate_sequences, records_to_prompts(records), spec, self.config.data.val_batch_size)
        out.non_tensor_batch["answer"] = batch_answers(out)
        return out

    # ------------------------------------------------------------------ helpers
    def _sampling(self, n: int, greedy: bool) -> SamplingSpec:
        """Greedy (validation) or the rollout's sampling, seeded by trainer.seed and the step."""
        r = self.config.actor_rollout_ref.rollout
        if greedy:
            return SamplingSpec(n=n, do_sample=False, temperature=0.0, top_p=1.0, top_k=-1,
                                max_new_tokens=r.max_new_tokens)
        return SamplingSpec(n=n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                            max_new_tokens=r.max_new_tokens, seed=self.config.trainer.seed * 100_003 + self.global_step)

    @staticmethod
    def _scores_on_last_token(batch: DataProto, scores: np.ndarray) -> torch.Tensor:
        mask = batch.batch["response_mask"]
        out = torch.zeros_like(mask, dtype=torch.float32)
        last = (mask.sum(-1) - 1).clamp(min=0)
        out[torch.arange(len(mask)), last] = torch.as_tensor(scores, dtype=torch.float32)
        return out

    # ------------------------------------------------------------------ collapse guard
    def _act_on_guard(self, metrics: dict[str, float]) -> bool:
        """Act on a tripped guard (``trainer.guard.action``); True when training must end."""
        if self.guard is None or self.guard.passing:
            return False
        action = self.config.trainer.guard.action
        event: dict[str, Any] = {"step": self.global_step, "action": action, "reasons": self.guard.reasons}
        if action == "rollback":
            folder = self._last_passing_checkpoint()
            self.wg.load_checkpoint(str(folder))
            event["rolled_back_to"] = parse_step(folder)
            metrics["guard/rolled_back_to"] = float(event["rolled_back_to"])
        logger.warning("collapse guard at step %d: %s -> %s", self.global_step, "; ".join(self.guard.reasons),
                       action + (f" to step {event['rolled_back_to']}" if action == "rollback" else ""))
        self.guard_events.append(event)
        write_jsonl(self.tracker.run_dir / "guard_events.jsonl", self.guard_events)
        return action != "warn"

    def _last_passing_checkpoint(self) -> Path:
        """Newest checkpoint saved while the guard passed and at least a window before now (the window's
        statistics lag: a checkpoint inside the tripped window may already be collapsed)."""
        latest_ok = self.global_step - self.config.trainer.guard.window
        for step in [s for s in reversed(list_steps(self.ckpt.root)) if s <= latest_ok]:
            folder = self.ckpt.step_dir(step)
            if (folder / STATE_FILE).is_file():
                state = self.ckpt.load(folder)
                if "guard" in state and state["guard"]["passed"]:
                    return folder
        raise FileNotFoundError(f"collapse guard: no checkpoint under {self.ckpt.root} was saved while passing")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> Path:
        """Actor shards + optimizer + scheduler (workers), then data position, RNG, step and the base
        validation (here); a run's last checkpoint also holds its summary.

        ``extra``: more driver state stored with it (the online protocol's stream position).
        """
        folder = self.ckpt.prepare(self.global_step)
        self.wg.save_checkpoint(str(folder))
        state = {"step": self.global_step, "dataloader": self.dataloader.state_dict(), "rng": rng_state(),
                 "model_path": self.config.actor_rollout_ref.model.path, "base_val": self.base_val}
        if self.last_val and self.global_step >= self.total_steps:
            state["summary"] = M.base_vs_adapted(self.base_val, self.last_val)
        if self.guard is not None:
            state["guard"] = {"passed": self.guard.passing, "state": self.guard.state_dict(),
                              "events": self.guard_events}
        return self.ckpt.commit(self.global_step, {**state, **(extra or {})})

    def _maybe_resume(self) -> dict[str, Any] | None:
        """Restore the checkpoint ``trainer.resume_mode`` selects; returns its trainer state (None: fresh)."""
        t = self.config.trainer
        folder = self.ckpt.resolve_resume(t.resume_mode, t.resume_from_path)
        if folder is None:
            return None
        verify_checkpoint(folder)
        state = self.ckpt.load(folder)
        self.wg.load_checkpoint(str(folder))
        self.global_step = int(state["step"])
        self.dataloader.load_state_dict(state["dataloader"])
        set_rng_state(state["rng"])
        self.base_val = dict(state["base_val"])
        if self.guard is not None and "guard" in state:
            self.guard.load_state_dict(state["guard"]["state"])
            self.guard_events = list(state["guard"]["events"])
        logger.info("resumed from %s at step %d", folder, self.global_step)
        return state


def finished_summary(config: RLConfig, num_prompts: int) -> dict[str, float] | None:
    """The summary of a run whose checkpoint to resume from is its last step (nothing left to do),
    read from the trainer state (JSON) without starting workers; None otherwise.

    Also refuses, before anything starts, a resume folder whose DCP pickles would run code
    (:func:`verl.checkpoint.verify_checkpoint`; a ``ValueError`` naming the file).
    """
    t = config.trainer
    ckpt = CheckpointManager(t.default_local_dir, keep=t.max_actor_ckpt_to_keep)
    folder = ckpt.resolve_resume(t.resume_mode, t.resume_from_path)
    if folder is None:
        return None
    verify_checkpoint(folder)
    state = ckpt.load(folder)
    if int(state["step"]) < derive_total_steps(config, num_prompts) or "summary" not in state:
        return None
    return dict(state["summary"])
