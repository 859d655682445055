"""FSDPActor at world size 1 (gloo, in-process) and one world-size-2 equivalence check (spawned ranks)."""

from __future__ import annotations

import io
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist

from verl.config.schema import ActorConfig, FSDPConfig, ModelConfig, OptimConfig

ARCH = "qwen2_5_vl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(seed: int) -> bytes:
    from PIL import Image

    arr = (np.random.default_rng(seed).random((56, 56, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def actor_cfg(**over) -> ActorConfig:
    optim = OptimConfig(lr=over.pop("lr", 1e-3), weight_decay=0.01)
    base = dict(ppo_mini_batch_size=2, use_kl_loss=True, kl_loss_coef=0.001, optim=optim,
                fsdp=FSDPConfig(param_dtype="float32"))  # float32 compute: exact comparisons on CPU
    base.update(over)
    return ActorConfig(**base)


def model_cfg(path, **over) -> ModelConfig:
    return ModelConfig(path=str(path), enable_gradient_checkpointing=True, **over)


def make_data(model_path, n_prompts: int = 2, n: int = 2, R: int = 4, seed: int = 0):
    """A rollout-like DataProto: n adjacent samples per prompt, left-padded prompts, right-padded responses."""
    from verl.models.load import load_vlm
    from verl.models.multimodal import batch_prompt_inputs, build_prompt_inputs, pad_id_of
    from verl.protocol import DataProto

    _, processor = load_vlm(model_path, dtype=torch.float32, device="cpu")
    texts = ["<image>\nWhich digit?", "Look <image> and name the digit shown here, please."]
    msgs = [[{"role": "user", "content": texts[i % 2]}] for i in range(n_prompts)]
    imgs = [[_png(i)] for i in range(n_prompts)]
    per = [build_prompt_inputs(processor, m, im) for m, im in zip(msgs, imgs)]
    coll = batch_prompt_inputs(processor, [per[i // n] for i in range(n_prompts * n)])
    b = n_prompts * n
    g = torch.Generator().manual_seed(seed)
    responses = torch.randint(20, 200, (b, R), generator=g)
    rmask = torch.ones(b, R, dtype=torch.long)
    rmask[1, R - 1:] = 0
    responses[rmask == 0] = pad_id_of(processor)
    tensors = {"prompts": coll["input_ids"], "responses": responses, "response_mask": rmask,
               "input_ids": torch.cat([coll["input_ids"], responses], 1),
               "attention_mask": torch.cat([coll["attention_mask"], rmask], 1)}
    obj = lambda xs: np.array(xs + [None], dtype=object)[:-1]  # noqa: E731  (1-D object array of lists)
    non = {"prompt": obj([msgs[i // n] for i in range(b)]), "images": obj([imgs[i // n] for i in range(b)]),
           "uid": np.array([f"p{i // n}" for i in range(b)], dtype=object),
           "prompt_index": np.array([i // n for i in range(b)], dtype=object)}
    return DataProto.from_dict(tensors, non, {"temperature": 1.0})


@pytest.fixture(scope="module")
def pg():
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def qpath(tiny_vlm_path):
    return tiny_vlm_path(ARCH)


def _params(actor) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in actor.state_dict_for_sync()}


def _with_old(actor, data, adv: torch.Tensor, ref=None):
    lp, _ = actor.compute_log_prob(data)
    data.batch["old_log_probs"] = lp
    data.batch["ref_log_prob"] = (ref or actor).compute_log_prob(data)[0]
    data.batch["advantages"] = adv[:, None].expand_as(lp) * data.batch["response_mask"]
    return data


def test_compute_log_prob_matches_plain_forward(pg, qpath):
    from verl.models.load import load_vlm
    from verl.workers.actor import FSDPActor

    data = make_data(qpath)
    actor = FSDPActor(model_cfg(qpath), actor_cfg(), device="cpu")
    lp, ent = actor.compute_log_prob(data, calc_entropy=True)
    model, _ = load_vlm(qpath, dtype=torch.float32, device="cpu")
    ids, att = data.batch["input_ids"], data.batch["attention_mask"]
    pix = torch.cat([actor._image_inputs(data, [i], {})[0][0]["pixel_values"] for i in range(len(data))])
    grid = torch.cat([actor._image_inputs(data, [i], {})[0][0]["image_grid_thw"] for i in range(len(data))])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=att, pixel_values=pix, image_grid_thw=grid,
                    mm_token_type_ids=(ids == model.config.image_token_id).int(), use_cache=False)
    R = data.batch["responses"].shape[1]
    ref = out.logits[:, -R - 1:-1].log_softmax(-1).gather(-1, ids[:, -R:, None]).squeeze(-1)
    m = data.batch["response_mask"].bool()
    assert torch.allclose(lp[m], ref[m], atol=1e-5)
    assert ent.shape == lp.shape and (ent[m] > 0).all()
    # sync names: the HF module names by default, the on-disk checkpoint names on request
    from safetensors import safe_open

    with safe_open(os.path.join(qpath, "model.safetensors"), "pt") as f:
        disk = set(f.keys())
    assert {k for k, _ in actor.state_dict_for_sync()} == set(model.state_dict())
    assert {k for k, _ in actor.state_dict_for_sync(checkpoint_names=True)} == disk


def test_update_moves_log_probs_and_respects_frozen_tower(pg, qpath):
    from verl.workers.actor import FSDPActor

    actor = FSDPActor(model_cfg(qpath, freeze_vision_tower=True), actor_cfg(), device="cpu")
    data = _with_old(actor, make_data(qpath), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    before = _params(actor)
    metrics = actor.update_policy(data)
    after = _params(actor)
    for k in ("actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/kl_loss", "actor/entropy",
              "actor/grad_norm", "actor/lr"):
        assert k in metrics and np.isfinite(metrics[k]), k
    assert metrics["actor/kl_loss"] == 0.0  # ref == policy and a single optimizer step (2 prompts = 1 mini-batch)
    assert metrics["actor/lr"] == pytest.approx(1e-3)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any("language_model" in k for k in changed)
    tower = [k for k in after if "visual" in k and "merger" not in k]
    assert tower and not (changed & set(tower))  # frozen tower untouched
    assert any("merger" in k for k in changed)  # the projector is still trained
    new_lp, _ = actor.compute_log_prob(data)
    m = data.batch["response_mask"].float()
    delta = ((new_lp - data.batch["old_log_probs"]) * m).sum(-1)
    assert delta[0] > 0 and delta[1] < 0


def test_sft_step_raises_likelihood(pg, qpath):
    from verl.workers.actor import FSDPActor

    actor = FSDPActor(model_cfg(qpath), actor_cfg(), device="cpu")
    data = make_data(qpath)
    lp0, _ = actor.compute_log_prob(data)
    metrics = actor.sft_step(data, weights=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    lp1, _ = actor.compute_log_prob(data)
    m = data.batch["response_mask"].float()
    assert np.isfinite(metrics["actor/sft_loss"])
    assert ((lp1 - lp0) * m)[:2].sum() > 0


def _adv_data(qpath, adv):
    data = make_data(qpath)
    data.batch["advantages"] = torch.as_tensor(adv)[:, None] * data.batch["response_mask"]
    return data


def _update_grads(actor, data) -> tuple[dict[str, float], dict[str, torch.Tensor], list[list[int]]]:
    """One update; returns (metrics, the clipped gradients the optimizer stepped with, rows of each forward)."""
    grads: dict[str, torch.Tensor] = {}
    forwards: list[list[int]] = []
    step, fwd = actor.optimizer.step, actor._forward

    def capture(*a, **k):
        for name, p in actor.module.named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                grads[name] = g.clone()
        return step(*a, **k)

    def count(data_, rows, *a, **k):
        forwards.append(list(rows))
        return fwd(data_, rows, *a, **k)

    actor.optimizer.step, actor._forward = capture, count
    try:
        metrics = actor.update_policy(data)
    finally:
        actor.optimizer.step, actor._forward = step, fwd
    return metrics, grads, forwards


def _assert_grads_close(a: dict, b: dict, rel: float) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        err = (a[k] - b[k]).norm() / b[k].norm().clamp(min=1e-12)
        assert err <= rel, (k, float(err))


def test_on_policy_update_takes_old_log_probs_from_its_own_forward(pg, qpath):
    from verl.workers.actor import FSDPActor, old_log_prob_in_update

    cfg = actor_cfg(use_kl_loss=False)  # 2 prompts per mini-batch = the whole step
    assert old_log_prob_in_update(cfg, prompts_per_step=2)
    assert not old_log_prob_in_update(cfg, prompts_per_step=4)
    assert not old_log_prob_in_update(actor_cfg(ppo_epochs=2), prompts_per_step=2)
    adv = [1.0, -1.0, 0.5, -0.5]
    a = FSDPActor(model_cfg(qpath), cfg, device="cpu")
    sep = _adv_data(qpath, adv)
    sep.batch["old_log_probs"] = a.compute_log_prob(sep)[0]
    m_sep, g_sep, f_sep = _update_grads(a, sep)
    b = FSDPActor(model_cfg(qpath), cfg, device="cpu")
    m_fused, g_fused, f_fused = _update_grads(b, _adv_data(qpath, adv))
    assert m_fused["actor/pg_loss"] == pytest.approx(m_sep["actor/pg_loss"], rel=1e-6, abs=1e-7)
    assert m_fused["actor/pg_clipfrac"] == 0.0 and m_fused["actor/ppo_kl"] == 0.0
    _assert_grads_close(g_fused, g_sep, 1e-5)
    assert f_fused == f_sep == [[0, 1, 2, 3]]  # one forward: no separate old-log-prob pass needed
    c = FSDPActor(model_cfg(qpath), actor_cfg(ppo_epochs=2, use_kl_loss=False), device="cpu")
    with pytest.raises(KeyError, match="not exactly on-policy"):
        c.update_policy(_adv_data(qpath, adv))


def test_zero_advantage_groups_skip_forward_and_backward(pg, qpath):
    from verl.workers.actor import FSDPActor

    on = FSDPActor(model_cfg(qpath), actor_cfg(use_kl_loss=False), device="cpu")
    off = FSDPActor(model_cfg(qpath), actor_cfg(use_kl_loss=False, skip_zero_adv_groups=False), device="cpu")
    # no signal at all: no forward, and the optimizer still steps as with zero gradients present (decay)
    before = _params(on)
    m_on, g_on, f_on = _update_grads(on, _adv_data(qpath, [0.0] * 4))
    m_off, g_off, f_off = _update_grads(off, _adv_data(qpath, [0.0] * 4))
    assert f_on == [] and len(f_off) == 1 and m_on["actor/skipped_group_frac"] == 1.0
    assert m_on["actor/grad_norm"] == 0.0 == m_off["actor/grad_norm"] and m_on["actor/pg_loss"] == 0.0
    pa, pb = _params(on), _params(off)
    assert all(torch.equal(pa[k], pb[k]) for k in pa) and any(not torch.equal(pa[k], before[k]) for k in pa)
    adv = [1.0, -1.0, 0.0, 0.0]  # prompt 1's votes all agreed
    m_on, g_on, f_on = _update_grads(on, _adv_data(qpath, adv))
    m_off, g_off, f_off = _update_grads(off, _adv_data(qpath, adv))
    assert f_on == [[0, 1]] and f_off == [[0, 1, 2, 3]]
    assert m_on["actor/skipped_group_frac"] == 0.5 and m_off["actor/skipped_group_frac"] == 0.0
    # the skipped rows' tokens stay in the token-mean normalizer: same loss, same gradient
    assert m_on["actor/pg_loss"] == pytest.approx(m_off["actor/pg_loss"], rel=1e-6)
    _assert_grads_close(g_on, g_off, 1e-5)


@pytest.mark.parametrize("over", [{"share_prompt": False}, {"ppo_max_token_len_per_gpu": 1,
                                                             "log_prob_max_token_len_per_gpu": 1}])
def test_same_numbers_per_sample_and_with_small_token_budget(pg, qpath, over):
    """Prompt sharing and the micro-batch split change the cost, not the numbers."""
    from verl.workers.actor import FSDPActor

    adv = [1.0, -1.0, 0.5, -0.5]
    base = FSDPActor(model_cfg(qpath), actor_cfg(), device="cpu")
    other = FSDPActor(model_cfg(qpath), actor_cfg(**over), device="cpu")
    d0, d1 = _with_old(base, make_data(qpath), torch.tensor(adv)), _with_old(other, make_data(qpath), torch.tensor(adv))
    m = d0.batch["response_mask"].bool()
    assert (d0.batch["old_log_probs"] - d1.batch["old_log_probs"]).abs()[m].max() <= 1e-5
    m0, g0, f0 = _update_grads(base, d0)
    m1, g1, f1 = _update_grads(other, d1)
    assert m1["actor/pg_loss"] == pytest.approx(m0["actor/pg_loss"], rel=1e-5, abs=1e-7)
    _assert_grads_close(g1, g0, 1e-4)
    assert f0 == [[0, 1, 2, 3]]
    assert f1 == ([[0, 1, 2, 3]] if "share_prompt" in over else [[0], [1], [2], [3]])


def test_checkpoint_roundtrip_and_export(pg, qpath, tmp_path):
    from verl.models.load import load_vlm
    from verl.workers.actor import FSDPActor

    acfg = actor_cfg(ppo_mini_batch_size=1)
    a = FSDPActor(model_cfg(qpath), acfg, device="cpu")
    data = _with_old(a, make_data(qpath), torch.tensor([1.0, -1.0, 0.5, -0.5]))
    a.update_policy(data)
    torch.manual_seed(123)
    a.save_checkpoint(tmp_path / "ckpt")
    draw = torch.rand(3)
    b = FSDPActor(model_cfg(qpath), acfg, device="cpu")
    b.load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(torch.rand(3), draw)  # RNG state restored
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            x, y = sa[i][k], sb[i][k]
            x, y = (x.full_tensor() if hasattr(x, "full_tensor") else x), (y.full_tensor() if hasattr(y, "full_tensor") else y)
            assert torch.equal(x, y), (i, k)
    assert b.scheduler.last_epoch == a.scheduler.last_epoch == 1
    ma, mb = a.update_policy(data), b.update_policy(data)
    assert ma == mb
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)

    a.export_hf(tmp_path / "hf")
    model, _ = load_vlm(tmp_path / "hf", dtype=torch.float32, device="cpu")
    lp_a, _ = a.compute_log_prob(data)
    from verl.models.vlm_forward import response_log_probs

    ii, pidx = a._image_inputs(data, list(range(len(data))), {})
    with torch.no_grad():
        lp_m, _ = response_log_probs(model, data.batch["input_ids"], data.batch["attention_mask"],
                                     data.batch["responses"].shape[1], ii, pidx)
    assert torch.equal(lp_a, lp_m)


def test_reference_policy_is_frozen(pg, qpath):
    from verl.workers.actor import FSDPActor

    ref = FSDPActor(model_cfg(qpath), actor_cfg(), device="cpu", role="ref")
    assert ref.optimizer is None and not any(p.requires_grad for p in ref.module.parameters())
    with pytest.raises(RuntimeError, match="reference"):
        ref.update_policy(make_data(qpath))


# ---------------------------------------------------------------- world size 2 == world size 1
# one sample per micro-batch; seq-mean-token-mean: the mean over ranks of the per-rank means is the global mean
_WS_CFG = dict(ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=1, ppo_epochs=2, loss_agg_mode="seq-mean-token-mean")
_WS_ADV = [1.0, -1.0, 0.5, -0.5]


def _ws2_worker(rank: int, port: int, qpath: str, out_dir: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from verl.workers.actor import FSDPActor

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        actor = FSDPActor(model_cfg(qpath), actor_cfg(**_WS_CFG), device="cpu")
        full = _with_old(actor, make_data(qpath), torch.tensor(_WS_ADV))
        shard = full.chunk(2)[rank]  # the DP dispatch: contiguous halves
        metrics = actor.update_policy(shard)
        params = _params(actor)
        # sharded checkpoint at world size 2: a fresh actor resumes bit-identically
        actor.save_checkpoint(os.path.join(out_dir, "ckpt"))
        fresh = FSDPActor(model_cfg(qpath), actor_cfg(**_WS_CFG), device="cpu")
        fresh.load_checkpoint(os.path.join(out_dir, "ckpt"))
        resumed_equal = all(torch.equal(v, params[k]) for k, v in _params(fresh).items())
        resumed_equal = resumed_equal and actor.update_policy(shard) == fresh.update_policy(shard)
        torch.save({"metrics": metrics, "params": params if rank == 0 else {}, "resumed_equal": resumed_equal},
                   os.path.join(out_dir, f"ws2_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_world_size_2_matches_world_size_1(pg, qpath, tmp_path):
    import torch.multiprocessing as mp

    from verl.workers.actor import FSDPActor

    mp.spawn(_ws2_worker, args=(_free_port(), str(qpath), str(tmp_path)), nprocs=2, join=True)
    ws2 = [torch.load(tmp_path / f"ws2_rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(w["resumed_equal"] for w in ws2)
    actor = FSDPActor(model_cfg(qpath), actor_cfg(**_WS_CFG), device="cpu")
    data = _with_old(actor, make_data(qpath), torch.tensor(_WS_ADV))
    m1 = actor.update_policy(data)
    p1 = _params(actor)
    # Adam normalizes each coordinate, so a near-zero gradient whose fp32 sum differs in the last bit
    # between one and two ranks can move by up to lr per step: almost all entries agree to 1e-6, none by
    # more than lr * steps.
    for k, v in p1.items():
        close = torch.isclose(v, ws2[0]["params"][k], atol=1e-6, rtol=1e-5).float().mean().item()
        assert close > 0.98, (k, close)
        assert (v - ws2[0]["params"][k]).abs().max().item() <= 2 * 1e-3 * _WS_CFG["ppo_epochs"] + 1e-6, k
    # one sample per micro-batch: the mean over ranks of the per-rank means is the world-size-1 mean
    for k in ("actor/pg_loss", "actor/kl_loss", "actor/entropy"):
        assert np.mean([w["metrics"][k] for w in ws2]) == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
    assert ws2[0]["metrics"]["actor/grad_norm"] == pytest.approx(m1["actor/grad_norm"], rel=1e-4)


@pytest.mark.parametrize("reshard", [True, False])
def test_skipped_mini_batches_after_no_grad_passes(pg, qpath, reshard):
    """Mini-batches of one prompt whose groups are all skipped, right after the no-grad old / ref passes
    (which leave FSDP2 units unsharded): the step zero-fills sharded grads and the update runs."""
    from verl.workers.actor import FSDPActor

    fsdp = FSDPConfig(param_dtype="float32", reshard_after_forward=reshard)
    actor = FSDPActor(model_cfg(qpath), actor_cfg(ppo_mini_batch_size=1, fsdp=fsdp), device="cpu")
    for adv in ([0.0, 0.0, 1.0, -1.0], [0.0] * 4):
        data = _with_old(actor, make_data(qpath, n_prompts=2, n=2), torch.tensor(adv))
        metrics = actor.update_policy(data)
        assert metrics["actor/skipped_group_frac"] == (0.5 if adv[2] else 1.0)


def test_rollout_is_weights_multiply_the_policy_loss(pg, qpath):
    """Weights of 2 on every token (rollout correction): twice the policy loss and twice the gradient."""
    from verl.workers.actor import FSDPActor

    metrics = []
    for weight in (None, 2.0):
        actor = FSDPActor(model_cfg(qpath), actor_cfg(use_kl_loss=False), device="cpu")
        data = _adv_data(qpath, [1.0, -1.0, 0.5, -0.5])
        data.batch["old_log_probs"] = actor.compute_log_prob(data)[0]
        if weight is not None:
            data.batch["rollout_is_weights"] = torch.full_like(data.batch["old_log_probs"], weight)
        metrics.append(actor.update_policy(data))
    assert metrics[1]["actor/pg_loss"] == pytest.approx(2 * metrics[0]["actor/pg_loss"], rel=1e-5)
    assert metrics[1]["actor/grad_norm"] == pytest.approx(2 * metrics[0]["actor/grad_norm"], rel=1e-5)
