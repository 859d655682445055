"""Fixtures shared by the rollout tests: digit-like images (as PNG paths and bytes), prompt batches and
a teacher-forced log-prob reference computed with the plain Hugging Face forward."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

# Two 8x8 "digits" (a 1 and a 7), drawn by hand, upscaled to 56x56 (a multiple of 28 for Qwen).
_DIGITS = {
    "one": ["...##...", "..###...", "...##...", "...##...", "...##...", "...##...", "..####..", "........"],
    "seven": ["########", "......##", ".....##.", "....##..", "...##...", "..##....", "..##....", "........"],
}


def _digit_png(rows: list[str]) -> bytes:
    from PIL import Image

    arr = np.array([[255 if c == "#" else 0 for c in r] for r in rows], dtype=np.uint8)
    img = Image.fromarray(arr).resize((56, 56), Image.NEAREST).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory) -> dict[str, object]:
    """``{"one_path": str, "one_bytes": bytes, "seven_path": ..., "seven_bytes": ...}``."""
    out: dict[str, object] = {}
    folder = tmp_path_factory.mktemp("digit_pngs")
    for name, rows in _DIGITS.items():
        data = _digit_png(rows)
        path = folder / f"{name}.png"
        path.write_bytes(data)
        out[f"{name}_path"], out[f"{name}_bytes"] = str(path), data
    return out


@pytest.fixture(scope="session")
def make_prompts(digit_images):
    """``make_prompts(k, **meta)`` -> DataProto of k prompt rows (images alternate path / bytes)."""
    from verl.protocol import DataProto

    refs = [digit_images["one_path"], digit_images["seven_bytes"], digit_images["seven_path"],
            digit_images["one_bytes"]]
    questions = ["Which digit is this?", "Name the digit.\nA. 1\nB. 7", "What number?", "Digit?"]

    def _make(k: int = 2, **meta) -> DataProto:
        prompts = np.empty(k, dtype=object)
        images = np.empty(k, dtype=object)
        for i in range(k):
            prompts[i] = [{"role": "user", "content": f"<image>\n{questions[i % 4]}"}]
            images[i] = [refs[i % 4]]
        non = {"prompt": prompts, "images": images, "uid": np.array([f"u{i}" for i in range(k)], dtype=object),
               "answer": np.array(["1", "7", "7", "1"][:k] + ["1"] * max(0, k - 4), dtype=object)}
        return DataProto.from_dict({}, non, dict(meta))

    return _make


@pytest.fixture(scope="session")
def teacher_forced():
    """``teacher_forced(model, processor, out, rows, temperature)`` -> list of 1D log-prob tensors: the
    log-probs of each row's response tokens from one unpadded full forward of the plain HF model."""
    from verl.models.multimodal import build_prompt_inputs

    @torch.no_grad()
    def _run(model, processor, prompts, out, rows, temperature: float = 1.0) -> list[torch.Tensor]:
        res = []
        for j in rows:
            i = int(out.non_tensor_batch["prompt_index"][j])
            inp = build_prompt_inputs(processor, prompts.non_tensor_batch["prompt"][i],
                                      prompts.non_tensor_batch["images"][i])
            k = int(out.batch["response_mask"][j].sum())
            resp = out.batch["responses"][j, :k]
            ids = torch.cat([inp["input_ids"], resp])[None]
            kw = {k2: v for k2, v in inp.items() if k2 not in ("input_ids", "mm_token_type_ids")}
            if "mm_token_type_ids" in inp:
                kw["mm_token_type_ids"] = torch.cat([inp["mm_token_type_ids"],
                                                     torch.zeros(k, dtype=inp["mm_token_type_ids"].dtype)])[None]
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0].float()
            p = inp["input_ids"].numel()
            logp = (logits[p - 1:p - 1 + k] / temperature).log_softmax(-1)
            res.append(logp.gather(-1, resp[:, None])[:, 0])
        return res

    return _run


@pytest.fixture(scope="session")
def load_tiny(tiny_vlm_path):
    """``load_tiny(arch)`` -> (path, fp32 CPU model, processor): a fresh copy each call."""

    def _load(arch: str = "qwen2_5_vl"):
        from verl.models.load import load_vlm

        path = tiny_vlm_path(arch)
        model, processor = load_vlm(path, dtype=torch.float32, device="cpu")
        return path, model, processor

    return _load
