"""Actor old-log-prob + update at TTRV's shape: shared-prompt forward vs per-sample forward.

Model: the Qwen2.5-VL-3B shape (text 2048 wide, 16 heads / 2 KV heads, MLP 11,008, vocabulary 151,936,
mrope sections [16, 24, 24]; vision 1280 wide, window 112, patch 14, spatial merge 2) with reduced depth
(``--layers`` of 36, ``--vision-layers`` of 32), random weights, float32 on CPU / bfloat16 on CUDA,
gradient checkpointing on (the actor's default). Batch: ``--prompts`` prompts, each one image of
``--image-size`` pixels (448 -> 256 image tokens) and ~``--text-tokens`` text tokens in the Qwen chat
layout, ``--votes`` sampled answers of up to ``--answer-len`` tokens each.

Both paths run exactly what the actor runs per micro-batch (``response_log_probs``; micro-batches of at
most ``--max-tokens`` tokens by :func:`verl.workers.micro_batch.token_micro_batches`): old log-probs
(no grad), then the update's forward + backward of the PPO loss. Time: the median of ``--repeats``
alternating runs (A B A B) after one warm-up run. Peak memory: during the passes, minus what was held
before them (weights and gradient buffers are allocated first): on CUDA ``torch.cuda.max_memory_allocated``,
on CPU the peak of the running sum of torch's allocations from the profiler's memory events.

    python scripts/bench_ttrv_step.py            # the full shape (several minutes on 2 cores)
    python scripts/bench_ttrv_step.py --quick    # 1 + 1 layers, 2 prompts x 8 votes (under a minute)
    python scripts/bench_ttrv_step.py --tiny     # the tiny test model (seconds; the suite runs this)

The last line reads ``shared-prompt speed-up: X× time, Y× peak memory``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import verl  # noqa: E402,F401  (torchvision shim before transformers)

QWEN_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
            "vision_end_token_id": 151653}
IM_START, IM_END, NL, PAD = 151644, 151645, 198, 151643


def real_shape_model(layers: int, vision_layers: int, dtype: torch.dtype):
    """Qwen2.5-VL-3B widths, reduced depth, random weights."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": layers,
            "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 128000, "hidden_act": "silu", "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            "bos_token_id": PAD, "eos_token_id": IM_END, "max_window_layers": layers}
    vision = {"depth": vision_layers, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
              "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "window_size": 112, "fullatt_block_indexes": [vision_layers - 1], "tokens_per_second": 2,
              "hidden_act": "silu"}
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **QWEN_IDS)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    return model.to(dtype)


def tiny_model():
    from verl.models.load import load_vlm
    from verl.models.tiny import build_tiny_vlm

    out = Path(tempfile.mkdtemp(prefix="bench_ttrv_tiny_"))
    model, _ = load_vlm(build_tiny_vlm("qwen2_5_vl", out, seed=0), dtype=torch.float32, device="cpu")
    return model


def make_batch(model, a, seed: int = 0):
    """Left-padded Qwen chat prompts with one image each, right-padded answers; per-prompt pixel tensors."""
    cfg = model.config
    vc = cfg.vision_config
    vocab = cfg.text_config.vocab_size
    g = torch.Generator().manual_seed(seed)
    grid = a.image_size // vc.patch_size
    n_img = grid * grid // (vc.spatial_merge_size ** 2)
    pix_dim = 3 * vc.temporal_patch_size * vc.patch_size ** 2
    text_hi = min(vocab, PAD) if vocab > PAD else vocab - 16  # ordinary text ids (below the special tokens)
    prompts, images = [], []
    for p in range(a.prompts):
        n_text = a.text_tokens + (p % 3) - 1  # 59..61: prompts of different lengths (left padding)
        sys_ids = torch.randint(0, text_hi, (max(1, n_text // 4),), generator=g).tolist()
        q_ids = torch.randint(0, text_hi, (max(1, n_text - len(sys_ids) - 9),), generator=g).tolist()
        ids = ([IM_START % vocab] + sys_ids + [IM_END % vocab, NL % vocab, IM_START % vocab]
               + [cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id]
               + q_ids + [IM_END % vocab, NL % vocab, IM_START % vocab, NL % vocab])
        prompts.append(ids)
        images.append({"pixel_values": torch.randn(grid * grid, pix_dim, generator=g),
                       "image_grid_thw": torch.tensor([[1, grid, grid]])})
    P = max(len(x) for x in prompts)
    b, R = a.prompts * a.votes, a.answer_len
    input_ids = torch.full((b, P + R), PAD % vocab, dtype=torch.long)
    attn = torch.zeros(b, P + R, dtype=torch.long)
    for r in range(b):
        ids = prompts[r // a.votes]
        input_ids[r, P - len(ids):P] = torch.tensor(ids)
        attn[r, P - len(ids):P] = 1
        n_ans = int(torch.randint(2, R + 1, (1,), generator=g))
        input_ids[r, P:P + n_ans] = torch.randint(0, text_hi, (n_ans,), generator=g)
        attn[r, P:P + n_ans] = 1
    adv = torch.where(torch.arange(b) % 2 == 0, 1.0, -1.0)
    return input_ids, attn, images, [r // a.votes for r in range(b)], adv


def run_passes(model, batch, a, share_prompt: bool, device: str) -> tuple[torch.Tensor, int]:
    """Old log-probs (no grad) + update forward/backward, micro-batched by tokens; returns (old lp, #micro)."""
    from verl.algos.policy_loss import clipped_policy_loss
    from verl.models.vlm_forward import response_log_probs
    from verl.workers.micro_batch import token_micro_batches

    input_ids, attn, images, pidx, adv = batch
    R = a.answer_len
    plen, rlen = attn[:, :-R].sum(-1).tolist(), attn[:, -R:].sum(-1).tolist()
    mbs = token_micro_batches(range(len(pidx)), pidx, plen, rlen, a.max_tokens, share_prompt=share_prompt)
    imgs = [{k: v.to(device) for k, v in im.items()} for im in images]

    def fwd(rows):
        used = sorted({pidx[r] for r in rows})
        local = [used.index(pidx[r]) for r in rows]
        return response_log_probs(model, input_ids[rows].to(device), attn[rows].to(device), R,
                                  [imgs[p] for p in used], local, share_prompt=share_prompt)[0]

    old = torch.zeros(len(pidx), R)
    model.eval()
    with torch.no_grad():
        for rows in mbs:
            old[rows] = fwd(rows).float().cpu()
    model.train()
    mask = attn[:, -R:].float()
    total = mask.sum()
    for rows in mbs:
        lp = fwd(rows).float()
        m = mask[rows].to(lp.device)
        loss, *_ = clipped_policy_loss(old[rows].to(lp.device), lp, adv[rows, None].to(lp.device) * m, m)
        (loss * m.sum() / total).backward()
    return old, len(mbs)


def cpu_peak_bytes(fn) -> int:
    """Peak of the running sum of torch CPU allocations while ``fn`` runs (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    cur = peak = 0
    for _, n in events:
        cur += n
        peak = max(peak, cur)
    return peak


def measure_peak(fn, device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return cpu_peak_bytes(fn)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=2, help="text decoder layers (36 in the 3B model)")
    ap.add_argument("--vision-layers", type=int, default=2, help="vision blocks (32 in the 3B model)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--votes", type=int, default=16)
    ap.add_argument("--answer-len", type=int, default=8)
    ap.add_argument("--text-tokens", type=int, default=60)
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--max-tokens", type=int, default=16384, help="ppo_max_token_len_per_gpu")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per path (after one warm-up)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")
    ap.add_argument("--quick", action="store_true", help="1 + 1 layers, 2 prompts x 8 votes, 1 repeat")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    a = ap.parse_args(argv)
    if a.quick:
        a.layers, a.vision_layers, a.prompts, a.votes, a.repeats = 1, 1, 2, 8, 1
    if a.tiny:
        a.image_size, a.repeats = 56, 1
    device = a.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    model = tiny_model() if a.tiny else real_shape_model(a.layers, a.vision_layers, dtype)
    model = model.to(device)
    if not a.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for p in model.parameters():  # gradient buffers are held before the passes, like the weights
        p.grad = torch.zeros_like(p)
    batch = make_batch(model, a)
    ids, attn = batch[0], batch[1]
    P = ids.shape[1] - a.answer_len
    plen = attn[:, :P].sum(-1)
    n_img = int((ids[0] == model.config.image_token_id).sum())
    print(f"shape: {a.prompts} prompts x {a.votes} votes, prompts {int(plen.min())}-{int(plen.max())} tokens "
          f"({n_img} image tokens, {a.image_size}x{a.image_size}), answers <= {a.answer_len} tokens; "
          f"{'tiny model' if a.tiny else f'Qwen2.5-VL-3B widths, {a.layers}/36 text layers, {a.vision_layers}/32 vision blocks'}; "
          f"{device} {str(dtype).removeprefix('torch.')}; built in {time.perf_counter() - t0:.1f} s", flush=True)

    res: dict[str, dict] = {}
    for name, share in (("per-sample", False), ("shared", True)):  # warm-up run = the memory measurement
        out: dict = {}

        def once(share=share, out=out):
            out["lp"], out["micro"] = run_passes(model, batch, a, share, device)

        res[name] = {"peak": measure_peak(once, device), **out, "times": []}
        model.zero_grad(set_to_none=False)
    for _ in range(a.repeats):
        for name, share in (("per-sample", False), ("shared", True)):
            t = time.perf_counter()
            run_passes(model, batch, a, share, device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            res[name]["times"].append(time.perf_counter() - t)
            model.zero_grad(set_to_none=False)
    for name, r in res.items():
        r["time"] = statistics.median(r["times"])
        print(f"{name:>10}: old-log-prob + update {r['time']:.2f} s (median of {len(r['times'])}), "
              f"peak +{r['peak'] / 2**20:.0f} MiB, {r['micro']} micro-batch(es) per pass", flush=True)
    m = attn[:, -a.answer_len:].bool()
    diff = float((res["shared"]["lp"] - res["per-sample"]["lp"]).abs()[m].max())
    tol = 1e-3 if dtype == torch.float32 else 0.25
    print(f"max |old log-prob shared - per-sample| = {diff:.2e} (tolerance {tol:g})")
    x = res["per-sample"]["time"] / res["shared"]["time"]
    y = res["per-sample"]["peak"] / max(1, res["shared"]["peak"])
    print(f"shared-prompt speed-up: {x:.1f}× time, {y:.1f}× peak memory", flush=True)
    if diff > tol:
        raise SystemExit(f"shared-prompt and per-sample log-probs differ by {diff:.2e} > {tol:g}")
    return {"time_x": x, "memory_x": y, "max_diff": diff}


if __name__ == "__main__":
    main()
