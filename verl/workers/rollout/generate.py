"""The one generation helper: prompts + a :class:`SamplingSpec` -> rollout output, in batches.

Serves the trainer's validation (through the worker group's ``generate_sequences``), the plain evaluation
(``recipes.ttrv.evaluate``) and SOPHIA's caption / evaluation stages (through ``RolloutEngine.generate``)::

    out = generate(engine.generate, prompt_batch(messages, images, uids), SamplingSpec(n=4, seed=0), batch_size=64)
    texts = texts_per_prompt(out, 4)  # or, in one call: generate_texts(engine.generate, messages, images, spec)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from verl.protocol import DataProto, object_array
from verl.workers.rollout.base import SamplingSpec

GenerateFn = Callable[[DataProto], DataProto]


def sampling_meta(spec: SamplingSpec) -> dict[str, Any]:
    """The ``meta_info`` of a generate call (greedy: temperature 0, no sampling; ``seed`` left out when None)."""
    meta = dataclasses.asdict(spec.validate())
    if spec.greedy:
        meta.update(do_sample=False, temperature=0.0)
    if meta["seed"] is None:
        del meta["seed"]
    return meta


def prompt_batch(prompts: Sequence[Any], images: Sequence[Sequence[Any]], uids: Sequence[str],
                 **columns: Sequence[Any]) -> DataProto:
    """Rollout input: chat messages, image refs (paths / bytes) and uids per row, plus any extra columns."""
    cols = {"uid": uids, "prompt": prompts, "images": [list(i) for i in images], **columns}
    return DataProto.from_dict(non_tensors={k: object_array(list(v)) for k, v in cols.items()})


def generate(generate_fn: GenerateFn, prompts: DataProto, spec: SamplingSpec, batch_size: int | None = None,
             reseed_chunks: bool = False) -> DataProto:
    """``spec.n`` samples per prompt row, ``batch_size`` prompts per call (all at once when None).

    Returns the non-tensor columns of the outputs (``response_text`` and the input columns), ``spec.n``
    rows per prompt in prompt order; token tensors are not kept (their padded
    widths differ between calls). ``reseed_chunks``: the call starting at row ``s`` samples with seed
    ``spec.seed + s`` (else every call uses ``spec.seed``).
    """
    size = batch_size or max(1, len(prompts))
    outs = []
    for s in range(0, len(prompts), size):
        chunk = prompts[s:s + size]
        chunk_spec = dataclasses.replace(spec, seed=spec.seed + s) if reseed_chunks and spec.seed is not None else spec
        chunk.meta_info.update(sampling_meta(chunk_spec))
        out = generate_fn(chunk)
        outs.append(DataProto.from_dict(non_tensors=out.non_tensor_batch, meta_info=out.meta_info))
    return DataProto.concat(outs)


def texts_per_prompt(out: DataProto, n: int) -> list[list[str]]:
    """The ``n`` response texts of each prompt row of a rollout output (rows are interleaved by prompt)."""
    texts = [str(t) for t in out.non_tensor_batch["response_text"]]
    return [texts[j:j + n] for j in range(0, len(texts), n)]


def generate_texts(generate_fn: GenerateFn, prompts: Sequence[Any], images: Sequence[Sequence[Any]],
                   spec: SamplingSpec, *, batch_size: int | None = None, uids: Sequence[str] | None = None,
                   reseed_chunks: bool = False) -> list[list[str]]:
    """``spec.n`` response texts per (prompt, images) row (uids default to ``row<i>``)."""
    ids = list(uids) if uids is not None else [f"row{i}" for i in range(len(prompts))]
    out = generate(generate_fn, prompt_batch(prompts, images, ids), spec, batch_size, reseed_chunks)
    return texts_per_prompt(out, spec.n)
