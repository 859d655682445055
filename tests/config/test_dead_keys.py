"""No dead config keys: every schema leaf is read by the code during one short run per rollout engine.

The run goes through ``verl.trainer.main.run`` (data loading, tracker, trainer loop, validation, checkpoint)
on the local backend (the worker in this process), so that reads inside the worker (actor, reference,
rollout engine) are recorded too; the Ray start-up (``main.init_ray``) runs with ``ray.init`` replaced by a
recorder of its arguments. A read is an
attribute access on a schema dataclass instance from code outside the config machinery (the loader's
checks, dataclasses / OmegaConf / copy helpers, which touch every field, do not count).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from verl.config import schema

pytestmark = pytest.mark.slow
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config")

# Keys that are legitimately not read in these runs, each with the reason.
ALLOWED_UNREAD: dict[str, str] = {
    f"actor_rollout_ref.model.{key}": "read only when model.lora_rank > 0 (tests/workers/test_lora.py trains LoRA)"
    for key in ("lora_alpha", "target_modules", "lora_vision_tower", "lora_projector")
}
# finalize derives the value on the right from the key on the left; the key is live iff the derived one is read.
DERIVED: dict[str, str] = {
    "data.max_response_length": "actor_rollout_ref.rollout.max_new_tokens",
}
_IGNORED_MODULES = ("dataclasses", "copy", "copyreg", "pickle", "omegaconf", "hydra", "verl.config.schema")
# (module, function) pairs whose reads are config checks, not uses
IGNORED_FUNCS = {("verl.config.loader", f) for f in ("_check_choices", "_positive", "_get", "_check_unknown_keys",
                                                     "to_yaml")}


def schema_paths(cls: type = schema.RLConfig, prefix: str = "") -> tuple[dict[type, str], list[str]]:
    """``({dataclass: its dotted path}, [every leaf's dotted path])`` of the schema tree."""
    paths: dict[type, str] = {cls: prefix}
    leaves: list[str] = []
    hints = {f.name: f.default_factory for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        child = hints[f.name]() if callable(hints[f.name]) else None
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(child):
            sub_paths, sub_leaves = schema_paths(type(child), key)
            paths.update(sub_paths)
            leaves.extend(sub_leaves)
        else:
            leaves.append(key)
    return paths, leaves


@contextmanager
def record_reads(root: type = schema.RLConfig,
                 ignored_funcs: set[tuple[str, str]] = frozenset(IGNORED_FUNCS)) -> Iterator[set[str]]:
    """Record the dotted paths of ``root``'s schema read while the block runs (see the module docstring); reads
    from the ``(module, function)`` pairs of ``ignored_funcs`` do not count."""
    paths, _ = schema_paths(root)
    reads: set[str] = set()

    def make_getattr(cls: type):
        names = {f.name for f in dataclasses.fields(cls)}
        base = paths[cls]

        def __getattribute__(self, name):  # noqa: N807 - installed as the class's attribute hook
            if name in names:
                caller = sys._getframe(1)
                module = caller.f_globals.get("__name__", "")
                ignored = module.startswith(_IGNORED_MODULES) or (module, caller.f_code.co_name) in ignored_funcs
                if not ignored:
                    reads.add(f"{base}.{name}" if base else name)
            return object.__getattribute__(self, name)

        return __getattribute__

    for cls in paths:
        cls.__getattribute__ = make_getattr(cls)
    try:
        yield reads
    finally:
        for cls in paths:
            del cls.__getattribute__


def short_run(tmp: Path, model: Path, data: Path, *overrides: str) -> schema.RLConfig:
    """Training steps (one per epoch) + validation + checkpoints in ``tmp/ckpt`` through ``main.run`` on the local
    backend (this process); resumes what is in ``tmp/ckpt``."""
    import torch

    from verl.config.loader import load_config
    from verl.trainer import main

    files = f"[{data / 'test_noise_open.json'}]"
    cfg = load_config("ttrv_cpu_tiny", [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
        "data.max_samples=2", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.val_sample_n=2", "trainer.backend=local",
        "trainer.n_gpus_per_node=1", "trainer.save_freq=1", "trainer.test_freq=1",
        f"trainer.default_local_dir={tmp / 'ckpt'}", "trainer.logger=[jsonl]", *overrides,
    ], config_dir=CONFIG_DIR)
    threads = torch.get_num_threads()
    try:
        main.run(cfg)
    finally:
        torch.set_num_threads(threads)
    return cfg


def ray_init_kwargs(cfg: schema.RLConfig) -> dict:
    """What ``main.init_ray`` passes to ``ray.init`` for ``cfg`` (Ray itself is not started)."""
    import ray

    from verl.trainer import main

    seen: dict = {}
    saved = ray.is_initialized, ray.init
    ray.is_initialized, ray.init = (lambda: False), (lambda **kw: seen.update(kw))
    try:
        main.init_ray(cfg)
    finally:
        ray.is_initialized, ray.init = saved
    return seen


RUNS = {  # step 1 with the HF engine; the vLLM run resumes it (resume keys) and trains steps 2-3 with the keys
    # that only some settings read: the cosine schedule's, the loss terms of groups that all agree, rollout correction
    "hf": ("actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.micro_batch_size=2", "trainer.total_epochs=1"),
    "vllm": ("actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.max_num_seqs=16", "trainer.total_epochs=3",
             "actor_rollout_ref.actor.optim.lr_scheduler_type=cosine", "actor_rollout_ref.actor.skip_zero_adv_groups=false",
             "algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.rollout_rs=geometric",
             "algorithm.rollout_correction.rollout_rs_threshold=4.0",
             "algorithm.rollout_correction.rollout_rs_threshold_lower=0.25"),
}


def collect(tmp: Path, model: Path, data: Path) -> dict:
    """The runs of :data:`RUNS` under :func:`record_reads`: ``{"reads": [...], "ray_init": {engine: kwargs}}``."""
    read: set[str] = set()
    ray_init: dict[str, dict] = {}
    for engine, overrides in RUNS.items():
        with record_reads() as reads:
            cfg = short_run(tmp, model, data, f"trainer.log_dir={tmp / engine}", *overrides)
            kw = ray_init_kwargs(cfg)  # the Ray backend's start-up reads the ray_* keys
        read |= reads
        ray_init[engine] = {k: kw[k] for k in ("num_cpus", "include_dashboard", "dashboard_host")}
    return {"reads": sorted(read), "ray_init": ray_init}


def test_every_schema_key_is_read(tiny_vlm_path, digits_dir, tmp_path):
    """The runs go in a fresh process: engines and process groups of this one stay untouched."""
    pytest.importorskip("vllm", reason="the vLLM-only keys are read by the vLLM engine")
    _, leaves = schema_paths()
    assert set(ALLOWED_UNREAD) <= set(leaves) and set(DERIVED) <= set(leaves)  # no stale entries
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "reads.json"
    subprocess.run([sys.executable, __file__, str(tmp_path), str(tiny_vlm_path("qwen2_5_vl")), str(digits_dir),
                    str(out)], env=env, check=True, timeout=900)
    result = json.loads(out.read_text())
    for kw in result["ray_init"].values():  # ttrv_cpu_tiny's ray_num_cpus, the schema's dashboard defaults
        assert (kw["num_cpus"], kw["include_dashboard"], kw["dashboard_host"]) == (2, False, "127.0.0.1")
    read = set(result["reads"])
    read |= {src for src, derived in DERIVED.items() if derived in read}
    unread = sorted(set(leaves) - read - set(ALLOWED_UNREAD))
    assert not unread, f"schema keys never read by the code (wire them or delete them): {unread}"
    stale = sorted(set(ALLOWED_UNREAD) & read)
    assert not stale, f"allow-listed keys that are read after all (drop them from ALLOWED_UNREAD): {stale}"
    # the vLLM run trained with rollout correction: its metrics were logged on every step it ran
    rows = [json.loads(line) for f in (tmp_path / "vllm").rglob("metrics.jsonl") for line in f.open()]
    corrected = [r for r in rows if "actor/pg_loss" in r]
    assert corrected and all("rollout_corr/rollout_is_mean" in r and "rollout_corr/rollout_rs_masked_fraction" in r
                             for r in corrected), corrected


if __name__ == "__main__":  # python tests/config/test_dead_keys.py TMP MODEL DATA OUT.json
    tmp_arg, model_arg, data_arg, out_arg = sys.argv[1:5]
    Path(out_arg).write_text(json.dumps(collect(Path(tmp_arg), Path(model_arg), Path(data_arg))))
