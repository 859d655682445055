"""Export a training checkpoint to a plain Hugging Face folder that transformers and vLLM load.

A LoRA checkpoint (``actor_rollout_ref.model.lora_rank > 0``) exports the merged model to ``out_dir`` and
the peft adapter to ``out_dir/adapter``.

    python -m verl.trainer.export checkpoints/ttrv/cpu_tiny/global_step_40 exported/ [--base-model PATH]

Works for a checkpoint saved at any world size (DCP reshards on load). The base model folder (config,
processor, tokenizer, chat template) defaults to the one recorded in the checkpoint's trainer state.
Any folder loads, wherever it lies: its DCP pickles are read through allow-lists, and one that would run
code is refused (``error: <file>: ...``, exit 2) before anything is loaded (:func:`verl.checkpoint.verify_checkpoint`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from verl.checkpoint import load_trainer_state, verify_checkpoint
from verl.utils.cli import run_command


def export_checkpoint(step_dir: str | os.PathLike, out_dir: str | os.PathLike, base_model: str | None = None) -> Path:
    """Write ``out_dir`` (safetensors + the base folder's config/processor files); returns it."""
    import torch.distributed as dist

    from verl.config.schema import ActorConfig, FSDPConfig
    from verl.workers.actor import FSDPActor
    from verl.workers.lora import lora_enabled, model_config_for

    step = Path(step_dir)
    verify_checkpoint(step)
    state = load_trainer_state(step)
    base = base_model or state.get("model_path")
    if not base:
        raise ValueError(f"{step}: no model_path in the trainer state; pass --base-model")
    own_pg = not dist.is_initialized()
    if own_pg:
        store = tempfile.mkdtemp(prefix="verl_export_")
        dist.init_process_group("gloo", init_method=f"file://{store}/pg", rank=0, world_size=1)
    try:
        model_cfg = model_config_for(step / "actor", str(base))  # LoRA checkpoints hold only the adapters
        exact = ActorConfig(fsdp=FSDPConfig(param_dtype="float32"))  # a "ref" keeps its weights at this dtype
        policy = FSDPActor(model_cfg, exact, device="cpu", role="actor" if lora_enabled(model_cfg) else "ref")
        policy.load_model_weights(step / "actor")
        policy.export_hf(out_dir)
    finally:
        if own_pg:
            dist.destroy_process_group()
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step_dir", help="a global_step_N folder")
    p.add_argument("out_dir")
    p.add_argument("--base-model", default=None, help="model folder the run started from")
    a = p.parse_args(argv)
    return run_command(lambda: print(f"exported to {export_checkpoint(a.step_dir, a.out_dir, a.base_model)}"))


if __name__ == "__main__":
    sys.exit(main())
