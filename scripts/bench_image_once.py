"""Benchmark: actor log-prob / update passes with each image encoded once per prompt vs once per sample.

Prints the two timings and their ratio, measured in one run on the same model and batch
(REFERENCE §4: in GRPO every prompt has N samples that share one image). Runs on CPU with a small
offline model by default; on a GPU pass ``--device cuda`` and larger ``--vision-layers``/``--hidden``.

    python scripts/bench_image_once.py --prompts 4 --n 16 --image-size 224
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _batch(processor, image_size: int, prompts: int, n: int, resp_len: int):
    from PIL import Image

    from verl.models.multimodal import batch_prompt_inputs, build_prompt_inputs

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which digit is shown?"}]}]
    items = []
    for i in range(prompts):
        img = Image.new("RGB", (image_size, image_size), (i * 40 % 255, 128, 255 - i * 40 % 255))
        items.append(build_prompt_inputs(processor, msgs, [img]))
    batched = batch_prompt_inputs(processor, items)
    ids = batched["input_ids"].repeat_interleave(n, 0)
    attn = batched["attention_mask"].repeat_interleave(n, 0)
    vocab = len(processor.tokenizer)
    resp = torch.randint(10, min(vocab, 500), (ids.shape[0], resp_len))
    ids = torch.cat([ids, resp], 1)
    attn = torch.cat([attn, torch.ones_like(resp)], 1)
    images = [{k: v for k, v in it.items() if k in ("pixel_values", "image_grid_thw")} for it in items]
    return ids, attn, images


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> None:
    from verl.models.load import load_vlm
    from verl.models.tiny import build_tiny_vlm
    from verl.models.vlm_forward import response_log_probs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: a small offline Qwen2.5-VL)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--n", type=int, default=16, help="samples per prompt")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--response-length", type=int, default=8)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--vision-hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = a.model or build_tiny_vlm("qwen2_5_vl", Path(tmp) / "m", seed=0, vision_layers=a.vision_layers,
                                         vision_hidden=a.vision_hidden, max_pixels=a.image_size ** 2)
        model, processor = load_vlm(path, dtype=torch.float32, device=a.device)
        ids, attn, images = _batch(processor, a.image_size, a.prompts, a.n, a.response_length)
        ids, attn = ids.to(a.device), attn.to(a.device)
        rows = ids.shape[0]
        once = list(torch.arange(a.prompts).repeat_interleave(a.n))
        per_sample_images = [images[i] for i in once]

        def step(image_inputs, index):
            # one language-model pass per sample in both: this benchmark isolates the image encoding
            # (bench_ttrv_step.py measures the shared prompt pass)
            lp, _ = response_log_probs(model, ids, attn, a.response_length, image_inputs, index, share_prompt=False)
            lp.sum().backward()
            model.zero_grad(set_to_none=True)

        t_once = _time(lambda: step(images, once), a.repeats)
        t_each = _time(lambda: step(per_sample_images, list(range(rows))), a.repeats)
        n_img_tokens = int((ids[0] == model.config.image_token_id).sum())
        print(f"rows={rows} ({a.prompts} prompts x {a.n} samples), image tokens per prompt={n_img_tokens}, "
              f"device={a.device}")
        print(f"forward+backward, image encoded once per prompt : {t_once * 1000:8.1f} ms")
        print(f"forward+backward, image encoded once per sample : {t_each * 1000:8.1f} ms")
        print(f"speed-up of encoding once per prompt: {t_each / t_once:.2f}x")


if __name__ == "__main__":
    main()
