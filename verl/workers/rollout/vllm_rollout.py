"""vLLM rollout engine: an in-process ``vllm.LLM`` behind the :class:`RolloutEngine` interface.

Prompts are rendered with the processor's chat template (unexpanded image placeholder) and images are
passed as PIL images in ``multi_modal_data``; vLLM encodes each prompt's images once and fans out the
``n`` samples (``SamplingParams(n=...)``). Token ids of the prompts in the output come from
:func:`verl.models.multimodal.build_prompt_inputs`, so actor and rollout see the same prompt tokens.
Log-probs use vLLM's ``processed_logprobs`` mode (see :mod:`verl.workers.rollout.base`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import verl.workers.rollout.vllm_compat as vllm_compat
from verl.data.images import load_image
from verl.models.family import family_of
from verl.models.load import read_model_type
from verl.models.multimodal import build_prompt_inputs, pad_id_of, prompt_text
from verl.protocol import DataProto
from verl.workers.rollout.base import RolloutEngine, SamplingSpec, assemble_output, prompt_rows

if TYPE_CHECKING:
    from verl.config.schema import ModelConfig, RolloutConfig

logger = logging.getLogger("verl.rollout.vllm")


class VLLMRollout(RolloutEngine):
    """Rollout with vLLM (CPU build or CUDA). One engine per process; construction takes seconds."""

    def __init__(
        self,
        model: ModelConfig,
        rollout: RolloutConfig,
        *,
        device: str,
        seed: int,
        processor=None,
        max_images_per_prompt: int = 1,
        kv_cache_gib: float | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Engine for ``model.path`` with ``model.{dtype, trust_remote_code}`` and the vLLM keys of ``rollout``
        (``tensor_parallel_size``, ``max_model_len``, ``max_num_seqs``, ``enforce_eager``; on CUDA also
        ``gpu_memory_utilization`` and ``free_cache_engine`` = sleep mode). ``engine_kwargs`` go to
        ``vllm.LLM`` last."""
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        vllm_compat.prepare_vllm_env(self.device, kv_cache_gib)
        vllm = vllm_compat.import_vllm()
        self._SamplingParams = vllm.SamplingParams
        family = family_of(read_model_type(model.path))
        if family.vllm_architecture not in vllm.ModelRegistry.get_supported_archs():
            raise ValueError(f"model folder {str(model.path)!r}: this vLLM build has no {family.vllm_architecture} "
                             f"(model_type {family.model_type!r}); use actor_rollout_ref.rollout.name=hf")
        if processor is None:
            from verl.models.load import load_processor

            processor = load_processor(model.path, trust_remote_code=model.trust_remote_code)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.pad_id = pad_id_of(processor)
        # vLLM's sleep mode needs its CUDA memory allocator; on CPU there is nothing to free
        self.sleep_enabled = rollout.free_cache_engine and self.device == "cuda"
        kwargs: dict[str, Any] = {
            "model": str(model.path),
            "dtype": model.dtype,
            "trust_remote_code": model.trust_remote_code,
            "seed": int(seed),
            "tensor_parallel_size": rollout.tensor_parallel_size,
            "enforce_eager": rollout.enforce_eager,
            "limit_mm_per_prompt": {"image": max(1, int(max_images_per_prompt))},
            "logprobs_mode": "processed_logprobs",
            "enable_sleep_mode": self.sleep_enabled,
        }
        if self.device == "cuda":  # on CPU the KV cache is sized by VLLM_CPU_KVCACHE_SPACE (kv_cache_gib)
            kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
        if rollout.max_model_len is not None:
            kwargs["max_model_len"] = rollout.max_model_len
        if rollout.max_num_seqs is not None:
            kwargs["max_num_seqs"] = rollout.max_num_seqs
        kwargs.update(engine_kwargs or {})
        t0 = time.perf_counter()
        self.llm = vllm.LLM(**kwargs)
        self.init_seconds = time.perf_counter() - t0
        self.eos_ids = sorted(_eos_ids(self.llm, self.tokenizer))
        self._rng = np.random.default_rng(seed)
        self._asleep = False
        self._weights_awake = False
        self.last_timing: dict[str, float] = {"init_s": self.init_seconds}

    # ------------------------------------------------------------------ interface
    def generate(self, prompts: DataProto) -> DataProto:
        t0 = time.perf_counter()
        if self._asleep:
            self.wake_up()
        spec = SamplingSpec.from_meta(prompts.meta_info)
        messages, images = prompt_rows(prompts)
        requests, prompt_ids = [], []
        for i, (msgs, imgs) in enumerate(zip(messages, images)):
            try:
                prompt_ids.append(build_prompt_inputs(self.processor, msgs, imgs)["input_ids"])
                req: dict[str, Any] = {"prompt": prompt_text(self.processor, msgs)}
                if imgs:
                    req["multi_modal_data"] = {"image": [load_image(r) for r in imgs]}
            except (ValueError, TypeError, OSError, KeyError) as exc:
                raise ValueError(f"rollout prompt row {i}: {exc}") from exc
            requests.append(req)
        base_seed = spec.seed if spec.seed is not None else int(self._rng.integers(0, 2**30))
        params = [self._params(spec, base_seed + i * spec.n) for i in range(len(requests))]
        outs = self.llm.generate(requests, params, use_tqdm=False)
        self.last_prompt_token_ids = [list(o.prompt_token_ids or []) for o in outs]
        responses, log_probs = [], []
        for o in outs:
            for c in sorted(o.outputs, key=lambda c: c.index):
                toks = list(c.token_ids)
                responses.append(toks)
                log_probs.append(_sampled_logprobs(toks, c.logprobs))
        out = assemble_output(
            prompts, prompt_ids, responses, log_probs, n=spec.n, max_new_tokens=spec.max_new_tokens,
            pad_id=self.pad_id, tokenizer=self.tokenizer, engine="vllm",
        )
        self.last_timing = {"generate_s": time.perf_counter() - t0}
        return out

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload weights in place through the worker (``reload_weights``; loading into the model
        directly fails on CPU, whose backend repacks linear weights), then drop every cache that may
        hold outputs of the old weights (encoder, multimodal, prefix)."""
        t0 = time.perf_counter()
        if self._asleep and not self._weights_awake:
            self.llm.wake_up(tags=["weights"])
            self._weights_awake = True
        weights = [(name, t.detach()) for name, t in named_tensors]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.reset_caches()
        self.last_timing = {"load_weights_s": time.perf_counter() - t0}

    def reset_caches(self) -> None:
        """Invalidate encoder, multimodal-processor and prefix caches (after a weight change)."""
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Level-1 sleep on GPU (weights offloaded, KV cache dropped); no-op on CPU."""
        if not self.sleep_enabled or self._asleep:
            return
        self.llm.reset_prefix_cache()
        self.llm.sleep(level=1)
        self._asleep, self._weights_awake = True, False

    def wake_up(self) -> None:
        if not self._asleep:
            return
        # after a partial wake (weights only, for a weight sync) the KV cache completes it
        self.llm.wake_up(tags=["kv_cache"] if self._weights_awake else None)
        self._asleep, self._weights_awake = False, False

    def close(self) -> None:
        """Shut the engine down now (frees its memory and its process group) instead of at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    # ------------------------------------------------------------------ internals
    def _params(self, spec: SamplingSpec, seed: int):
        return self._SamplingParams(
            n=spec.n,
            temperature=0.0 if spec.greedy else spec.temperature,
            top_p=1.0 if spec.greedy else spec.top_p,
            top_k=0 if spec.greedy or spec.top_k <= 0 else spec.top_k,
            max_tokens=spec.max_new_tokens,
            logprobs=0,
            # vLLM's CPU runner fails ("CPU Generator does not use offset") when a request with its own
            # seeded generator is prefilled in chunks; on CPU sampling is seeded once per engine instead
            seed=seed if self.device == "cuda" else None,
            stop_token_ids=list(self.eos_ids),
            detokenize=False,
        )


def _sampled_logprobs(tokens: list[int], logprobs) -> list[float]:
    """Log-prob of each sampled token from vLLM's per-position logprob dicts."""
    if logprobs is None:
        raise RuntimeError("vLLM returned no logprobs although SamplingParams(logprobs=0) was set")
    out = []
    for pos, tok in enumerate(tokens):
        entry = logprobs[pos]
        lp = entry[tok]
        out.append(float(getattr(lp, "logprob", lp)))
    return out


def _eos_ids(llm, tokenizer) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    try:
        gen = llm.llm_engine.model_config.try_get_generation_config() or {}
    except Exception:  # older/newer vLLM without this helper
        gen = {}
    eos = gen.get("eos_token_id")
    if eos is not None:
        ids.update(int(x) for x in (eos if isinstance(eos, list | tuple) else [eos]))
    return ids
