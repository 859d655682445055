"""Actor old-log-prob + update at TTRV's shape: shared-prompt forward vs per-sample forward.

Model: the Qwen2.5-VL-3B shape of :mod:`verl.models.real_shape` (text 2048 wide, 16 heads / 2 KV heads,
MLP 11,008, vocabulary 151,936, mrope [16, 24, 24]; vision 1280 wide, window 112, patch 14, merge 2) with
reduced depth (``--layers`` of 36, ``--vision-layers`` of 32), random weights, float32 on CPU / bfloat16
on CUDA, gradient checkpointing on (the actor's default). Prompts: the real Qwen2.5-VL tokenizer, chat
template and image processor; one ``--image-size`` image each (448 -> 256 image tokens) and a TTRV-style
4-way multiple-choice question (~60 text tokens with the template); ``--votes`` random answers of 2 to
``--answer-len`` tokens per prompt.

Both paths run exactly what the actor runs per micro-batch (``response_log_probs``; micro-batches of at
most ``--max-tokens`` tokens by :func:`verl.workers.micro_batch.token_micro_batches`): old log-probs
(no grad), then the update's forward + backward of the PPO loss. Time: the median of ``--repeats``
alternating runs (A B A B) after one warm-up run. Peak memory: during the passes, minus what was held
before them (weights and gradient buffers are allocated first): on CUDA ``torch.cuda.max_memory_allocated``,
on CPU the peak of the running sum of torch's allocations from the profiler's memory events. The
(tied) embedding / lm_head is frozen unless ``--train-embeddings``: at reduced depth its two
vocabulary-sized gradient temporaries (151,936 x 2048, 1.2 GiB each in float32), the same in both paths,
would otherwise set the peak of both and hide the activations this benchmark compares.

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

from verl.utils.torchvision_compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()  # this script builds models and processors: torchvision importable first

OPTIONS = ["accordion", "shovel", "koala", "toaster", "golden retriever", "espresso maker", "red fox", "mitten",
           "lighthouse", "garden spider", "tennis ball", "fire engine"]


def real_shape_model(layers: int, vision_layers: int, dtype: torch.dtype):
    """Qwen2.5-VL-3B (:mod:`verl.models.real_shape`), reduced depth, random weights."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from verl.models.real_shape import shape_config

    cfg = shape_config("qwen2.5-vl-3b", layers=layers, vision_layers=vision_layers)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(cfg).to(dtype)


def tiny_model():
    from verl.models.load import load_vlm
    from verl.models.tiny import build_tiny_vlm

    out = Path(tempfile.mkdtemp(prefix="bench_ttrv_tiny_"))
    return load_vlm(build_tiny_vlm("qwen2_5_vl", out, seed=0), dtype=torch.float32, device="cpu")


def real_processor():
    """The real Qwen2.5-VL tokenizer + image processor (what :mod:`verl.models.real_shape` writes)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from verl.models import real_shape as rs
    from verl.models.chat_templates import QWEN2_VL_CHAT_TEMPLATE
    from verl.models.processors import Qwen2_5_VLImageProcessorOnly
    from verl.models.qwen_tokenizer import build_qwen_tokenizer

    image = Qwen2VLImageProcessorPil(size={"shortest_edge": rs.QWEN_MIN_PIXELS, "longest_edge": rs.QWEN_MAX_PIXELS},
                                     patch_size=14, temporal_patch_size=2, merge_size=2,
                                     image_mean=rs.QWEN_IMAGE_MEAN, image_std=rs.QWEN_IMAGE_STD, resample=3)
    tok = build_qwen_tokenizer("qwen2.5-vl", chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return Qwen2_5_VLImageProcessorOnly(image_processor=image, tokenizer=tok, chat_template=QWEN2_VL_CHAT_TEMPLATE)


def _png(size: int, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_batch(model, processor, a, seed: int = 0):
    """TTRV-style prompts (one image, a 4-way multiple-choice question) through the processor and chat
    template, left padded; ``votes`` right-padded random answers of 2..answer_len tokens each."""
    from verl.models.multimodal import batch_prompt_inputs, build_prompt_inputs, pad_id_of

    g = torch.Generator().manual_seed(seed)
    per = []
    for p in range(a.prompts):
        opts = [OPTIONS[(3 * p + k) % len(OPTIONS)] for k in range(4)]
        text = ("<image>\nWhich of these does the image show? Answer with the letter of the correct option only.\n"
                "Options:\n" + "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(opts)))
        per.append(build_prompt_inputs(processor, [{"role": "user", "content": text}], [_png(a.image_size, p)]))
    rows = [per[r // a.votes] for r in range(a.prompts * a.votes)]
    coll = batch_prompt_inputs(processor, rows)
    b, R = len(rows), a.answer_len
    vocab_text = 151643 if model.config.text_config.vocab_size > 151643 else model.config.text_config.vocab_size - 16
    responses = torch.randint(0, vocab_text, (b, R), generator=g)
    rmask = torch.zeros(b, R, dtype=torch.long)
    for r in range(b):
        rmask[r, : int(torch.randint(2, R + 1, (1,), generator=g))] = 1
    responses[rmask == 0] = pad_id_of(processor)
    input_ids = torch.cat([coll["input_ids"], responses], 1)
    attn = torch.cat([coll["attention_mask"], rmask], 1)
    images = [{k: v for k, v in x.items() if k in ("pixel_values", "image_grid_thw")} for x in per]
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
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--max-tokens", type=int, default=16384, help="ppo_max_token_len_per_gpu")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per path (after one warm-up)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")
    ap.add_argument("--train-embeddings", action="store_true", help="also train the (tied) embedding / lm_head")
    ap.add_argument("--quick", action="store_true", help="1 + 1 layers, 2 prompts x 8 votes, 1 repeat")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    a = ap.parse_args(argv)
    if a.quick:
        a.layers, a.vision_layers, a.prompts, a.votes, a.repeats = 1, 1, 2, 8, 1
    if a.tiny:
        a.image_size, a.repeats, a.prompts, a.votes = 56, 1, 2, 4
    device = a.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    if a.tiny:
        model, processor = tiny_model()
    else:
        model, processor = real_shape_model(a.layers, a.vision_layers, dtype), real_processor()
    model = model.to(device)
    if not a.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not a.train_embeddings:
        model.get_input_embeddings().requires_grad_(False)
        model.get_output_embeddings().requires_grad_(False)
    for p in model.parameters():  # gradient buffers are held before the passes, like the weights
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    batch = make_batch(model, processor, a)
    ids, attn = batch[0], batch[1]
    P = ids.shape[1] - a.answer_len
    plen = attn[:, :P].sum(-1)
    n_img = int((ids[0] == model.config.image_token_id).sum())
    print(f"shape: {a.prompts} prompts x {a.votes} votes, prompts {int(plen.min())}-{int(plen.max())} tokens "
          f"({n_img} image tokens, {a.image_size}x{a.image_size}), answers 2-{a.answer_len} tokens; "
          f"{'tiny model' if a.tiny else f'Qwen2.5-VL-3B widths, {a.layers}/36 text layers, {a.vision_layers}/32 vision blocks'}; "
          f"{device} {str(dtype).removeprefix('torch.')}, embeddings {'trained' if a.train_embeddings else 'frozen'}, "
          f"gradient checkpointing {'off' if a.no_checkpointing else 'on'}; built in {time.perf_counter() - t0:.1f} s",
          flush=True)

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
