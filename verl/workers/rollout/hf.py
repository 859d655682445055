"""Hugging Face rollout engine: a small sampling loop with a KV cache (fallback when vLLM is absent).

Each prompt's image is encoded ONCE and its prompt prefilled once: the prefill runs over the B prompts,
then the KV cache, last logits, attention mask and (m)RoPE positions are repeated n times for the n
samples. Positions come from the model family's registry entry (:mod:`verl.models.family`): 3D mRoPE from
the model's ``get_rope_index`` for the Qwen-VL families, 1D for InternVL. Sampling uses a seeded
``torch.Generator``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from verl.models.family import family_of, image_token_id
from verl.models.multimodal import batch_prompt_inputs, build_prompt_inputs, pad_id_of
from verl.protocol import DataProto
from verl.workers.rollout.base import RolloutEngine, SamplingSpec, assemble_output, prompt_rows


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering: masked entries become -inf (vLLM's rule: keep the
    smallest set of largest tokens whose probability reaches ``top_p``; never empty)."""
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = logits.sort(dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= (1.0 - top_p)
        drop[..., -1] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, idx, sorted_logits)
    return logits


def pick_tokens(
    logits: torch.Tensor, spec: SamplingSpec, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (or argmax) one token per row; returns (tokens [N], log-probs [N] float32) following the
    log-prob convention of :mod:`verl.workers.rollout.base`."""
    logits = logits.float()
    if spec.greedy:
        tok = logits.argmax(dim=-1)
        lp = logits.log_softmax(dim=-1).gather(-1, tok[:, None])[:, 0]
        return tok, lp
    scaled = filter_logits(logits / spec.temperature, spec.top_k, spec.top_p)
    logp = scaled.log_softmax(dim=-1)
    tok = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
    return tok, logp.gather(-1, tok[:, None])[:, 0]


class HFRollout(RolloutEngine):
    """Rollout with a plain Hugging Face VLM (``...ForConditionalGeneration``) and its processor."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        *,
        seed: int,
        micro_batch_size: int | None = None,
        eos_token_ids: Iterable[int] | None = None,
        offload: bool = False,
    ) -> None:
        """``offload``: :meth:`sleep` moves the weights to the CPU and :meth:`wake_up` back (CUDA only)."""
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.micro_batch_size = micro_batch_size
        self.pad_id = pad_id_of(processor)
        self.eos_ids = sorted(set(eos_token_ids) if eos_token_ids is not None else _eos_ids(model, self.tokenizer))
        self.device = next(model.parameters()).device
        self.family = family_of(model)
        self._generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.offload = offload and self.device.type == "cuda"
        self._asleep = False
        self.images_encoded = 0  # images passed through the vision tower (tests check once per prompt)
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ interface
    def generate(self, prompts: DataProto) -> DataProto:
        t0 = time.perf_counter()
        self.wake_up()
        spec = SamplingSpec.from_meta(prompts.meta_info)
        messages, images = prompt_rows(prompts)
        items = []
        for i, (msgs, imgs) in enumerate(zip(messages, images)):
            try:
                items.append(build_prompt_inputs(self.processor, msgs, imgs))
            except (ValueError, TypeError, OSError, KeyError) as exc:
                raise _with_context(exc, f"rollout prompt row {i} (uid={_row_id(prompts, i)})") from exc
        gen = self._generator
        if spec.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(spec.seed)
        mbs = self.micro_batch_size or len(items)
        responses: list[list[int]] = []
        log_probs: list[list[float]] = []
        for start in range(0, len(items), mbs):
            n_img = sum(len(v) for v in images[start:start + mbs])
            toks, lps = self._sample(items[start:start + mbs], spec, gen, n_img)
            responses.extend(toks)
            log_probs.extend(lps)
        out = assemble_output(
            prompts, [it["input_ids"] for it in items], responses, log_probs, n=spec.n,
            max_new_tokens=spec.max_new_tokens, pad_id=self.pad_id, tokenizer=self.tokenizer, engine="hf",
        )
        self.last_timing = {"generate_s": time.perf_counter() - t0}
        return out

    def sleep(self) -> None:
        """With ``offload``: the weights leave the GPU until :meth:`wake_up` (weight syncs still land)."""
        if self.offload and not self._asleep:
            self.model.to("cpu")
            torch.cuda.empty_cache()
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.model.to(self.device)
            self._asleep = False

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy a full state dict into the model (names as in ``model.state_dict()``)."""
        state = self.model.state_dict()
        unknown = []
        for name, tensor in named_tensors:
            if name not in state:
                unknown.append(name)
                continue
            state[name].copy_(tensor.to(state[name].device, state[name].dtype))
        if unknown:
            raise KeyError(f"HFRollout.load_weights: {len(unknown)} unknown parameter(s), e.g. {unknown[:3]}")

    # ------------------------------------------------------------------ internals
    def _positions(self, batch: dict) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        image_mask = ids == image_token_id(self.model.config)
        return self.family.positions(self.model.model, ids, mask, image_mask, batch.get("image_grid_thw"))

    @torch.inference_mode()
    def _sample(self, items: list[dict], spec: SamplingSpec, gen: torch.Generator, n_images: int):
        dev, n = self.device, spec.n
        batch = batch_prompt_inputs(self.processor, items, self.pad_id)
        batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        pos = self._positions(batch)
        mm = {}
        if batch.get("pixel_values") is not None:
            mm["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
            self.images_encoded += n_images
            if batch.get("image_grid_thw") is not None:
                mm["image_grid_thw"] = batch["image_grid_thw"]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         logits_to_keep=1, **mm)
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        if pos.dim() == 3:
            next_pos = pos[:, :, -1:].repeat_interleave(n, dim=1) + 1  # [3, B*n, 1]
        else:
            next_pos = pos[:, -1:].repeat_interleave(n, dim=0) + 1  # [B*n, 1]
        rows = ids.shape[0] * n
        eos = torch.tensor(self.eos_ids, device=dev, dtype=torch.long)
        done = torch.zeros(rows, dtype=torch.bool, device=dev)
        toks, lps = [], []
        for _ in range(spec.max_new_tokens):
            tok, lp = pick_tokens(logits, spec, gen)
            tok = tok.masked_fill(done, self.pad_id)
            toks.append(tok)
            lps.append(lp.masked_fill(done, 0.0))
            new_done = done | torch.isin(tok, eos)
            length_mask = (~done).long()
            done = new_done
            if bool(done.all()) or len(toks) == spec.max_new_tokens:
                break
            mask = torch.cat([mask, length_mask[:, None]], dim=1)
            step = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                              past_key_values=cache, use_cache=True)
            cache, logits = step.past_key_values, step.logits[:, -1]
            next_pos = next_pos + 1
        tok_m = torch.stack(toks, dim=1).cpu()
        lp_m = torch.stack(lps, dim=1).float().cpu()
        responses, log_probs = [], []
        for r in range(rows):
            row = tok_m[r].tolist()
            k = _length_with_eos(row, set(self.eos_ids))
            responses.append(row[:k])
            log_probs.append(lp_m[r, :k].tolist())
        return responses, log_probs


def _length_with_eos(row: list[int], eos: set[int]) -> int:
    for i, t in enumerate(row):
        if t in eos:
            return i + 1
    return len(row)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(x) for x in (gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos]))
    if not ids:
        raise ValueError("no eos token id found in the tokenizer or the generation config")
    return ids


def _row_id(prompts: DataProto, i: int):
    ntb = prompts.non_tensor_batch
    for key in ("uid", "id", "index"):
        if key in ntb:
            return ntb[key][i]
    return None


def _with_context(exc: Exception, where: str) -> Exception:
    try:
        return type(exc)(f"{where}: {exc}")
    except Exception:  # exception types with unusual constructors
        return RuntimeError(f"{where}: {exc!r}")
