"""Model-family adapter: per-token log-probs of response tokens with image features computed once per prompt.

A rollout batch holds ``n`` samples per prompt, all sharing the same image(s). A plain forward with
``pixel_values`` repeated per sample would run the vision tower ``n`` times on identical pixels. Here the
images of each *unique* prompt of a micro-batch are encoded once (one vision-tower call for the whole
micro-batch), the features are expanded to every sample with an index gather (so with a trainable tower
the gradients of all samples accumulate into the one encoding; with a frozen tower the encoding runs
under ``torch.no_grad``) and scattered into the language model's ``inputs_embeds``.

Position ids match what generation used for left-padded prompts: Qwen2-VL / Qwen2.5-VL use 3D mrope
positions from the model's own ``get_rope_index`` (attention-mask aware), InternVL plain 1D positions
``cumsum(attention_mask) - 1``.

Supported families (``config.model_type``): ``qwen2_vl``, ``qwen2_5_vl``, ``internvl``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
SUPPORTED_FAMILIES = (*QWEN_FAMILIES, "internvl")


def model_family(model: nn.Module) -> str:
    """``config.model_type`` of a supported VLM; a clear error for anything else."""
    family = getattr(getattr(model, "config", None), "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"unsupported model type {family!r} (supported: {', '.join(SUPPORTED_FAMILIES)})")
    return family


def _inner(model: nn.Module) -> nn.Module:
    """The ``*Model`` inside a ``*ForConditionalGeneration`` (holds vision tower and language model)."""
    inner = getattr(model, "model", None)
    if inner is None:
        raise ValueError(f"{type(model).__name__} has no inner `.model`; expected a *ForConditionalGeneration")
    return inner


def image_token_id(model: nn.Module) -> int:
    """Id of the image placeholder token that image features replace."""
    cfg = model.config
    tid = getattr(cfg, "image_token_id", None)
    if tid is None:
        tid = getattr(cfg, "image_token_index", None)
    if tid is None:
        raise ValueError(f"{type(model).__name__}: config has no image_token_id")
    return int(tid)


def vision_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The image-encoding modules: ``{"tower": ..., "projector": ...}``.

    For Qwen2-VL / Qwen2.5-VL the projector (patch merger) lives inside the tower module
    (``visual.merger``); for InternVL it is ``multi_modal_projector``.
    """
    family = model_family(model)
    inner = _inner(model)
    if family in QWEN_FAMILIES:
        return {"tower": inner.visual, "projector": inner.visual.merger}
    return {"tower": inner.vision_tower, "projector": inner.multi_modal_projector}


def vision_requires_grad(model: nn.Module) -> bool:
    """True when any parameter of the vision tower or projector is trainable."""
    mods = vision_modules(model)
    return any(p.requires_grad for m in mods.values() for p in m.parameters())


def encode_images(model: nn.Module, pixel_values: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
    """Image features for a batch of images, flattened to ``[n_image_tokens, hidden]`` in image order.

    ``grid`` is ``image_grid_thw`` for Qwen2-VL / Qwen2.5-VL (required there), ignored for InternVL.
    """
    family = model_family(model)
    inner = _inner(model)
    if family in QWEN_FAMILIES:
        if grid is None:
            raise ValueError(f"{family}: encode_images needs image_grid_thw")
        out = inner.get_image_features(pixel_values, grid, return_dict=True)
        feats = out.pooler_output
        return torch.cat(list(feats), dim=0) if isinstance(feats, list | tuple) else feats
    out = inner.get_image_features(pixel_values=pixel_values, return_dict=True)
    feats = out.pooler_output
    return feats.reshape(-1, feats.shape[-1])


def _collate_unique(image_inputs_per_prompt: Sequence[Mapping[str, Any] | None], used: list[int]):
    """Concatenate pixel tensors of the used prompts; returns (pixels, grid, per-prompt grid rows)."""
    pixels, grids, grid_rows = [], [], {}
    for p in used:
        inp = image_inputs_per_prompt[p]
        if inp is None or inp.get("pixel_values") is None:
            grid_rows[p] = None
            continue
        pixels.append(inp["pixel_values"])
        g = inp.get("image_grid_thw")
        if g is not None:
            grids.append(g)
        grid_rows[p] = g
    if not pixels:
        return None, None, grid_rows
    grid = torch.cat(grids, dim=0) if grids else None
    return torch.cat(pixels, dim=0), grid, grid_rows


def _tokens_per_prompt(model: nn.Module, inputs: Mapping[str, Any] | None, n_feats_total: int,
                       n_pixels_total: int) -> int:
    """Number of image feature rows one prompt contributes."""
    if inputs is None or inputs.get("pixel_values") is None:
        return 0
    g = inputs.get("image_grid_thw")
    if g is not None:
        merge = int(model.config.vision_config.spatial_merge_size)
        return int((g.prod(-1) // (merge * merge)).sum())
    return n_feats_total * int(inputs["pixel_values"].shape[0]) // max(1, n_pixels_total)


def build_position_ids(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       image_mask: torch.Tensor, image_grid_thw: torch.Tensor | None) -> torch.Tensor:
    """Position ids as generation computes them: 3D mrope ``[3, b, L]`` for Qwen, 1D ``[b, L]`` for InternVL.

    ``image_mask`` marks the placeholder tokens that receive image features (response tokens that happen
    to equal the image token are treated as text).
    """
    if model_family(model) in QWEN_FAMILIES:
        mm_type = image_mask.to(torch.int)
        pos, _ = _inner(model).get_rope_index(
            input_ids, mm_token_type_ids=mm_type, image_grid_thw=image_grid_thw, attention_mask=attention_mask
        )
        return pos
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def response_log_probs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    responses_len: int,
    image_inputs_per_prompt: Sequence[Mapping[str, Any] | None],
    prompt_index: Sequence[int] | torch.Tensor,
    temperature: float = 1.0,
    calc_entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropy) of the last ``responses_len`` tokens of each row.

    Args:
        model: a Qwen2-VL / Qwen2.5-VL / InternVL ``*ForConditionalGeneration`` (or the same wrapped by FSDP2;
            then call this inside the FSDP root module's forward).
        input_ids, attention_mask: ``[b, P + R]`` = left-padded prompt followed by right-padded response.
        responses_len: ``R``.
        image_inputs_per_prompt: per unique prompt, the processor's image tensors (``pixel_values``,
            ``image_grid_thw`` for Qwen) or ``None`` for a text-only prompt.
        prompt_index: ``[b]``, row -> index into ``image_inputs_per_prompt``.
        temperature: logits are divided by it (as in sampling).
        calc_entropy: also return the entropy of the (tempered) next-token distribution.
        entropy_grad: build the entropy's autograd graph (set False when it is only a metric).

    Returns:
        ``(log_probs [b, R], entropy [b, R] or None)`` in float32.
    """
    b, seq_len = input_ids.shape
    R = int(responses_len)
    if not 0 < R < seq_len:
        raise ValueError(f"responses_len={R} must be in (0, {seq_len})")
    pidx = torch.as_tensor(prompt_index, dtype=torch.long).reshape(-1).tolist()
    if len(pidx) != b:
        raise ValueError(f"prompt_index has {len(pidx)} entries for a batch of {b} rows")
    n_prompts = len(image_inputs_per_prompt)
    bad = [i for i, p in enumerate(pidx) if not 0 <= p < n_prompts]
    if bad:
        raise ValueError(f"prompt_index of rows {bad[:5]} out of range for {n_prompts} prompt image input(s)")
    device = input_ids.device
    used = sorted(set(pidx))

    # 1. Encode the images of every used prompt once (one tower call for the whole micro-batch).
    pixels, grid_all, grid_rows = _collate_unique(image_inputs_per_prompt, used)
    prompt_region = torch.zeros_like(input_ids, dtype=torch.bool)
    prompt_region[:, : seq_len - R] = True
    image_mask = (input_ids == image_token_id(model)) & prompt_region
    embed = model.get_input_embeddings()
    inputs_embeds = embed(input_ids)
    grid_per_sample = None
    if pixels is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and vision_requires_grad(model)):
            feats = encode_images(model, pixels.to(device), None if grid_all is None else grid_all.to(device))
        # 2. Row offsets of each prompt's features, then one gather that expands them to all samples.
        n_px = int(pixels.shape[0])
        offsets, start = {}, 0
        for p in used:
            n_tok = _tokens_per_prompt(model, image_inputs_per_prompt[p], int(feats.shape[0]), n_px)
            offsets[p] = (start, n_tok)
            start += n_tok
        if start != feats.shape[0]:
            raise RuntimeError(f"image features: expected {start} rows from the grids, the encoder gave {feats.shape[0]}")
        n_tokens = image_mask.sum(-1).tolist()
        index = []
        for row, p in enumerate(pidx):
            s, n = offsets[p]
            if n_tokens[row] != n:
                raise ValueError(
                    f"row {row} (prompt {p}): {n_tokens[row]} image placeholder token(s) in the prompt but "
                    f"{n} image feature row(s); image features and image tokens do not match"
                )
            index.extend(range(s, s + n))
        expanded = feats.index_select(0, torch.tensor(index, dtype=torch.long, device=feats.device))
        inputs_embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), expanded.to(inputs_embeds.dtype))
        if grid_all is not None:
            rows = [grid_rows[p] for p in pidx if grid_rows[p] is not None]
            grid_per_sample = torch.cat(rows, dim=0).to(device) if rows else None
    elif bool(image_mask.any()):
        rows = image_mask.any(-1).nonzero().flatten().tolist()
        raise ValueError(f"rows {rows[:5]} have image placeholder tokens but their prompts have no images")

    # 3. Language model + lm_head on inputs_embeds, logits only for the positions that predict responses.
    position_ids = build_position_ids(model, input_ids, attention_mask, image_mask, grid_per_sample)
    out = model(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=R + 1,
    )
    logits = out.logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, -R:]
    log_probs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    entropy = None
    if calc_entropy:
        from verl.algos.utils import entropy_from_logits

        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            entropy = entropy_from_logits(logits)
    return log_probs, entropy
