"""Supervised (reward-weighted maximum-likelihood) step of an :class:`~verl.workers.actor.FSDPActor`.

SOPHIA's update and the tiny models' pretraining use it: no ratio, no KL, no reference. On W ranks the step
equals the one-rank step on the whole batch: the normalizer (tokens for ``token-mean``, non-empty rows for the
sequence modes) is summed over ranks and each rank's loss is scaled by W, since FSDP averages gradients; rows
with an empty ``response_mask`` (padding to a multiple of W) add nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from verl.algos.policy_loss import weighted_nll_loss
from verl.workers.micro_batch import agg_share, batch_column

if TYPE_CHECKING:
    from verl.workers.actor import FSDPActor


def sum_over_ranks(x: float, world_size: int) -> float:
    """``x`` summed over the process group (``x`` itself on one rank)."""
    import torch.distributed as dist

    if world_size == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)


def sft_step(actor: FSDPActor, data, weights: torch.Tensor | None = None) -> dict[str, float]:
    """One optimizer step of ``agg(-w * log p(response))`` over ``data`` (this rank's rows of the batch)."""
    if actor.optimizer is None:
        raise RuntimeError("sft_step called on a reference policy (role='ref')")
    n, ws = len(data), actor.world_size
    w = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
    if w.numel() != n:
        raise ValueError(f"sft_step: {w.numel()} weights for {n} rows")
    agg = actor.cfg.loss_agg_mode
    rmask = batch_column(data, "response_mask", "sft_step")
    live = sum_over_ranks(float(rmask.sum()) if agg == "token-mean" else float((rmask.sum(-1) > 0).sum()), ws)
    norm = 1.0 if agg == "seq-sum" else max(live, 1.0)
    lr = float(actor.optimizer.param_groups[0]["lr"])
    actor.module.train()
    cache, total = {}, 0.0
    for rows in actor._micro_batches(data, list(range(n)), actor.cfg.ppo_max_token_len_per_gpu):
        sel = torch.as_tensor(rows or [0])  # None: a pass that only keeps this rank in step with the others
        lp, _ = actor._forward(data, sel.tolist(), cache, calc_entropy=False)
        mask = rmask[sel].to(lp.device)
        scale = 0.0 if rows is None else agg_share(agg, mask) / norm
        loss = weighted_nll_loss(lp, w[sel].to(lp.device), mask, agg) * scale
        (loss * ws).backward()
        total += float(loss.detach())
    grad_norm = actor._step()
    actor.scheduler.step()
    return {"actor/sft_loss": sum_over_ranks(total, ws), "actor/grad_norm": grad_norm, "actor/lr": lr}
