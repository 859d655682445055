"""FSDPActor at world size 1 (gloo, in-process) and one world-size-2 equivalence check (spawned ranks)."""

from __future__ import annotations

import io
import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

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


def actor_cfg(**over):
    optim = SimpleNamespace(lr=over.pop("lr", 1e-3), betas=(0.9, 0.999), weight_decay=0.01, lr_warmup_steps=-1,
                            lr_warmup_steps_ratio=0.0, warmup_style="constant", min_lr_ratio=0.0,
                            total_training_steps=-1)
    base = dict(ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=2, log_prob_micro_batch_size_per_gpu=4,
                ppo_epochs=1, policy_loss="vanilla", clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0,
                loss_agg_mode="token-mean", use_kl_loss=True, kl_loss_coef=0.001, kl_loss_type="low_var_kl",
                entropy_coeff=0.0, grad_clip=1.0, freeze_vision_tower=False, freeze_projector=False, optim=optim)
    base.update(over)
    return SimpleNamespace(**base)


def model_cfg(path, **over):
    return SimpleNamespace(path=str(path), trust_remote_code=False, enable_gradient_checkpointing=True,
                           freeze_vision_tower=False, freeze_projector=False, **over)


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

    actor = FSDPActor(model_cfg(qpath), actor_cfg(freeze_vision_tower=True), device="cpu")
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
    from verl.workers.actor import FSDPActor, ReferencePolicy

    ref = ReferencePolicy(model_cfg(qpath), actor_cfg(), device="cpu")
    assert ref.optimizer is None and not any(p.requires_grad for p in ref.module.parameters())
    with pytest.raises(RuntimeError, match="reference"):
        ref.update_policy(make_data(qpath))
    assert isinstance(ref, FSDPActor)


# ---------------------------------------------------------------- world size 2 == world size 1
_WS_CFG = dict(ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=1, ppo_epochs=2)
_WS_ADV = [1.0, -1.0, 0.5, -0.5]


def _ws2_worker(rank: int, port: int, qpath: str, out_dir: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import verl  # noqa: F401
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
