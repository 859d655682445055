"""Model-family adapter: per-token log-probs of response tokens, one pass per prompt and one image encoding.

A rollout batch holds ``n`` samples per prompt, all sharing the same prompt and image(s). Here, per
micro-batch:

- the images of each *unique* prompt are encoded once (one vision-tower call for the micro-batch; with a
  frozen tower under ``torch.no_grad``) and written into that prompt's placeholder embeddings;
- each unique prompt passes through the language model once, its ``n`` responses packed behind it in one
  row ``[prompt | r1 | ... | rn]`` and reading the prompt's keys/values through the shared-prompt
  attention of :mod:`verl.models.shared_prompt`; in training the gradients of all ``n`` responses
  accumulate into the one prompt pass (and the one image encoding);
- only the logits that predict response tokens are computed.

The padding common to the micro-batch (left of the prompts, right of the responses) is cut first, so a
micro-batch costs its longest prompt + its longest responses, not the global padded widths.

Position ids match what generation used for left-padded prompts: the mrope families (Qwen-VL) use 3D
positions from the model's own ``get_rope_index`` (attention-mask aware) for the prompt, and response
token ``j`` sits at ``max prompt position + 1 + j`` on all three axes; InternVL uses plain 1D positions
``cumsum(attention_mask) - 1``. DeepStack families (Qwen3-VL) also add the tower's intermediate features to
the image tokens' hidden states after the first language layers, as their own forward does.

Supported families: those of the registry (:data:`verl.models.family.FAMILIES`), which holds every
per-family difference used here (position ids, image features, tower / projector locations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from verl.models.family import ImageFeatures, family_of, image_token_id, vision_parts
from verl.models.shared_prompt import SharedPromptMask, enable_shared_prompt_attention


def _inner(model: nn.Module) -> nn.Module:
    """The ``*Model`` inside a ``*ForConditionalGeneration`` (holds vision tower and language model)."""
    inner = getattr(model, "model", None)
    if inner is None:
        raise ValueError(f"{type(model).__name__} has no inner `.model`; expected a *ForConditionalGeneration")
    return inner


def vision_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The image-encoding modules: ``{"tower": ..., "projector": ...}``.

    For the Qwen families the projector (patch merger; with DeepStack also its per-layer mergers, then as one
    ``ModuleList`` view) lives inside the tower module; for InternVL it is ``multi_modal_projector``.
    """
    tower, projectors = vision_parts(model)
    return {"tower": tower, "projector": projectors[0] if len(projectors) == 1 else nn.ModuleList(projectors)}


def vision_requires_grad(model: nn.Module) -> bool:
    """True when any parameter of the vision tower or projector is trainable."""
    mods = vision_modules(model)
    return any(p.requires_grad for m in mods.values() for p in m.parameters())


def encode_images(model: nn.Module, pixel_values: torch.Tensor, grid: torch.Tensor | None = None) -> ImageFeatures:
    """Image features for a batch of images, flattened to ``[n_image_tokens, hidden]`` in image order (plus the
    DeepStack features of the families that have them).

    ``grid`` is ``image_grid_thw`` for the Qwen families (required there), ignored for InternVL.
    """
    return family_of(model).image_features(_inner(model), pixel_values, grid)


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
    return family_of(model).positions(_inner(model), input_ids, attention_mask, image_mask, image_grid_thw)


def language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (``*TextModel`` / ``Qwen2Model``) inside a supported VLM."""
    family_of(model)
    return _inner(model).language_model


def _groups(pidx: list[int], prompt_ids: torch.Tensor, prompt_att: torch.Tensor, share_prompt: bool) -> list[list[int]]:
    """Rows sharing one prompt pass: all rows of a prompt index (``share_prompt``), else one row each."""
    if not share_prompt:
        return [[r] for r in range(len(pidx))]
    by: dict[int, list[int]] = {}
    for r, p in enumerate(pidx):
        by.setdefault(p, []).append(r)
    groups = list(by.values())
    for rows in groups:
        if len(rows) > 1:
            ids, att = prompt_ids[rows], prompt_att[rows]
            same = (ids == ids[:1]).all(-1) & (att == att[:1]).all(-1)
            if not bool(same.all()):
                bad = [rows[i] for i in (~same).nonzero().flatten().tolist()]
                raise ValueError(f"rows {bad[:5]} and row {rows[0]} have prompt index {pidx[rows[0]]} but different "
                                 f"prompt tokens; rows of one prompt must carry the same (padded) prompt")
    return groups


def _with_image_features(model: nn.Module, embeds: torch.Tensor, image_mask: torch.Tensor,
                         image_inputs_per_prompt: Sequence[Mapping[str, Any] | None], gp: list[int],
                         reps: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """Encode the images of the used prompts once (one tower call) and write them into the placeholders.

    ``gp[u]`` is packed row ``u``'s prompt index, ``reps[u]`` its first batch row (for error messages).
    Returns ``(embeds, image_grid_thw of the rows' images or None, DeepStack features of the placeholders in
    row-major order or None)``.
    """
    used = sorted(set(gp))
    pixels, grid_all, grid_rows = _collate_unique(image_inputs_per_prompt, used)
    if pixels is None:
        if bool(image_mask.any()):
            rows = [reps[u] for u in image_mask.any(-1).nonzero().flatten().tolist()]
            raise ValueError(f"rows {rows[:5]} have image placeholder tokens but their prompts have no images")
        return embeds, None, None
    device = embeds.device
    with torch.set_grad_enabled(torch.is_grad_enabled() and vision_requires_grad(model)):
        encoded = encode_images(model, pixels.to(device), None if grid_all is None else grid_all.to(device))
    feats = encoded.embeds
    n_px = int(pixels.shape[0])
    offsets, start = {}, 0
    for p in used:
        n_tok = _tokens_per_prompt(model, image_inputs_per_prompt[p], int(feats.shape[0]), n_px)
        offsets[p] = (start, n_tok)
        start += n_tok
    if start != feats.shape[0]:
        raise RuntimeError(f"image features: expected {start} rows from the grids, the encoder gave {feats.shape[0]}")
    n_tokens = image_mask.sum(-1).tolist()
    index: list[int] = []
    for u, p in enumerate(gp):
        s, n = offsets[p]
        if n_tokens[u] != n:
            raise ValueError(
                f"row {reps[u]} (prompt {p}): {n_tokens[u]} image placeholder token(s) in the prompt but "
                f"{n} image feature row(s); image features and image tokens do not match"
            )
        index.extend(range(s, s + n))
    index_t = torch.tensor(index, dtype=torch.long, device=feats.device)
    embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), feats.index_select(0, index_t).to(embeds.dtype))
    deepstack = None if encoded.deepstack is None else [d.index_select(0, index_t) for d in encoded.deepstack]
    grid = None
    if grid_all is not None:
        rows = [grid_rows[p] for p in gp if grid_rows[p] is not None]
        grid = torch.cat(rows, dim=0).to(device) if rows else None
    return embeds, grid, deepstack


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
    share_prompt: bool = True,
    token_stat: str = "entropy",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropy) of the last ``responses_len`` tokens of each row.

    Args:
        model: a ``*ForConditionalGeneration`` of a registered family (or the same wrapped by FSDP2;
            then call this inside the FSDP root module's forward).
        input_ids, attention_mask: ``[b, P + R]`` = left-padded prompt followed by right-padded response.
        responses_len: ``R``.
        image_inputs_per_prompt: per unique prompt, the processor's image tensors (``pixel_values``,
            ``image_grid_thw`` for Qwen) or ``None`` for a text-only prompt.
        prompt_index: ``[b]``, row -> index into ``image_inputs_per_prompt``; rows with the same index must
            carry the same prompt tokens.
        temperature: logits are divided by it (as in sampling).
        calc_entropy: also return the entropy of the (tempered) next-token distribution.
        entropy_grad: build the entropy's autograd graph (set False when it is only a metric).
        token_stat: the per-token statistic ``calc_entropy`` returns: ``entropy`` (default) or
            ``self_certainty`` (KL(uniform || next-token distribution), :func:`verl.algos.utils.self_certainty_from_logits`).
        share_prompt: the rows of a prompt read one prompt pass (default); ``False`` gives every row its own
            prompt pass (same numbers, the cost of a per-sample forward; for comparisons).

    Returns:
        ``(log_probs [b, R], entropy [b, R] or None)`` in float32; 0 after the micro-batch's longest response.
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
    device, P = input_ids.device, seq_len - R
    prompt_ids, prompt_att = input_ids[:, :P], attention_mask[:, :P]
    resp_ids, resp_att = input_ids[:, P:], attention_mask[:, P:]

    # 1. Packed rows: one per group, [prompt | S slots]; trim the padding common to the whole micro-batch.
    groups = _groups(pidx, prompt_ids, prompt_att, share_prompt)
    U, S = len(groups), max(len(g) for g in groups)
    reps = [g[0] for g in groups]
    gp = [pidx[r] for r in reps]
    u_att = prompt_att[reps]
    empty = (u_att.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {[reps[u] for u in empty][:5]} have an empty prompt (attention mask all 0)")
    left = int(u_att.any(0).nonzero()[0])
    u_ids, u_att = prompt_ids[reps, left:], u_att[:, left:]
    valid_cols = resp_att.any(0).nonzero()
    Tv = int(valid_cols[-1]) + 1 if len(valid_cols) else 1  # response tokens scored
    T = Tv - 1  # slot tokens: the last scored token is never an input
    row_u, row_s = [0] * b, [0] * b
    for u, rows in enumerate(groups):
        for s, r in enumerate(rows):
            row_u[r], row_s[r] = u, s
    row_u_t = torch.tensor(row_u, dtype=torch.long, device=device)
    row_s_t = torch.tensor(row_s, dtype=torch.long, device=device)

    # 2. Prompt embeddings with the image features (each used prompt's images encoded once).
    image_mask = u_ids == image_token_id(model.config)
    embed = model.get_input_embeddings()
    prompt_embeds, grid_rows, deepstack = _with_image_features(model, embed(u_ids), image_mask, image_inputs_per_prompt,
                                                    gp, reps)
    slot_ids = torch.zeros(U, S, T, dtype=input_ids.dtype, device=device)
    slot_ids[row_u_t, row_s_t] = resp_ids[:, :T]
    inputs_embeds = torch.cat([prompt_embeds, embed(slot_ids.view(U, S * T))], dim=1)

    # 3. Positions: the prompt's as generation computed them; each slot continues from the prompt's last one.
    pos_p = build_position_ids(model, u_ids, u_att, image_mask, grid_rows)
    slot_off = torch.arange(T, device=device).repeat(S)[None]
    if pos_p.dim() == 3:  # mrope [3, U, Lp]: text after the prompt is max + 1 + j on all three axes
        slot_pos = pos_p.amax(dim=(0, 2))[:, None] + 1 + slot_off
        position_ids = torch.cat([pos_p, slot_pos[None].expand(3, -1, -1)], dim=-1)
    else:
        slot_pos = pos_p.amax(dim=-1)[:, None] + 1 + slot_off
        position_ids = torch.cat([pos_p, slot_pos], dim=-1)

    # 4. Language model, then lm_head on [last prompt position | slots]: logits [U, 1 + S*T, V]. DeepStack
    # features go to the image placeholders of the prompt part (slots are text).
    lm = language_model(model)
    enable_shared_prompt_attention(lm)
    layout = SharedPromptMask.build(u_att, S, T)
    extra = {}
    if deepstack is not None:
        extra = {"visual_pos_masks": nn.functional.pad(image_mask, (0, S * T)), "deepstack_visual_embeds": deepstack}
    hidden = lm(inputs_embeds=inputs_embeds, attention_mask=torch.ones(inputs_embeds.shape[:2], dtype=torch.long,
                                                                       device=device),
                position_ids=position_ids, use_cache=False, shared_prompt=layout, **extra).last_hidden_state
    logits = model.get_output_embeddings()(hidden[:, -(S * T + 1):]).float()
    if temperature != 1.0:
        logits = logits / temperature
    # row r, response token j is predicted at kept position 0 (j = 0) or 1 + s*T + j - 1
    j = torch.arange(Tv, device=device)[None]
    kidx = torch.where(j == 0, 0, row_s_t[:, None] * T + j)
    uidx = row_u_t[:, None].expand(b, Tv)
    targets = resp_ids[:, :Tv]
    lse = torch.logsumexp(logits, dim=-1)
    log_probs = logits[uidx, kidx, targets] - lse[uidx, kidx]
    log_probs = nn.functional.pad(log_probs, (0, R - Tv))
    entropy = None
    if calc_entropy:
        from verl.algos.utils import entropy_from_logits, self_certainty_from_logits

        stat_fn = {"entropy": entropy_from_logits, "self_certainty": self_certainty_from_logits}[token_stat]
        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            entropy = nn.functional.pad(stat_fn(logits)[uidx, kidx], (0, R - Tv))
    return log_probs, entropy
