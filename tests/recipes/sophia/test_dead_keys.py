"""No dead SOPHIA config keys: every leaf of :class:`~recipes.sophia.config.SophiaConfig` is read by a short round,
or is one of the shared-section keys SOPHIA declares unused (:data:`recipes.sophia.config.UNUSED_SHARED_KEYS`,
refused at start-up when set), or is read only on a branch another test runs (:data:`ALLOWED_UNREAD`).

Two runs in a fresh process, reads recorded as in ``tests/config/test_dead_keys.py``: the command line
(``recipes.sophia.main``: config, preflight, captions by the policy worker group, reasonings by the local reasoner
worker group on a random text LM) with ``stages=[caption,reason]``; then a whole round (all stages, base
evaluation, a checkpoint per update step) with an oracle reasoner (random weights answer nothing, so nothing
would be kept), and the Ray start-up with ``ray.init`` replaced by a recorder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.sophia.config import UNUSED_SHARED_KEYS, SophiaConfig, load_sophia_config
from tests.config.test_dead_keys import IGNORED_FUNCS, record_reads, schema_paths

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
ALLOWED_UNREAD: dict[str, str] = {
    **{f"actor_rollout_ref.model.{key}": "read only when model.lora_rank > 0 (tests/workers/test_lora.py)"
       for key in ("lora_alpha", "target_modules", "lora_vision_tower", "lora_projector")},
    **{f"actor_rollout_ref.rollout.{key}": "read only by rollout.name=vllm (the vLLM run of tests/config/test_dead_keys.py)"
       for key in ("gpu_memory_utilization", "tensor_parallel_size", "enforce_eager", "max_model_len", "max_num_seqs")},
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": "read only when optim.lr_warmup_steps < 0 (the shipped "
                                                           "SOPHIA configs set 0)",
}
# config checks, not uses: the loader's and SOPHIA's finalize (which refuses the unused keys)
IGNORED = IGNORED_FUNCS | {("recipes.sophia.config", f) for f in ("_get", "finalize_sophia", "check_unused_keys")}


class OracleReasoner:
    """Every reasoning of an item ends in its gold answer (two lengths)."""

    def __init__(self, gold: dict[str, str]):
        self.gold, self.calls = gold, 0

    def reason(self, items, sampling):
        self.calls += len(items) * sampling.n
        return [[("Checking again. " * i) + f"The answer is \\boxed{{{self.gold[it.key.split('|')[0]]}}}."
                 for i in range(sampling.n)] for it in items]


def collect(tmp: Path, policy: Path) -> list[str]:
    """The two runs of the module docstring under :func:`record_reads`; returns the sorted paths read."""
    import ray

    from recipes.sophia.main import main
    from recipes.sophia.pairs import build_pairs_dataset
    from recipes.sophia.pipeline import run_pipeline
    from recipes.sophia.pretrain_reasoner import build_model
    from recipes.sophia.stages import questions_of
    from verl.trainer.main import init_ray

    build_pairs_dataset(tmp / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 2, "eval": 2, "dev": 1})
    tok, model = build_model(seed=0, hidden=32, layers=1)
    tok.save_pretrained(tmp / "reasoner")
    model.save_pretrained(tmp / "reasoner")
    common = [f"data.dir={tmp / 'data'}", f"actor_rollout_ref.model.path={policy}", f"trainer.log_dir={tmp / 'logs'}",
              "trainer.logger=[jsonl]", "caption.k=2", "caption.max_new_tokens=4", "reason.n=2",
              "reason.max_new_tokens=4", "select.alpha=0.0", "eval.max_new_tokens=4", "update.max_response_tokens=16",
              "trainer.total_epochs=1", "actor_rollout_ref.actor.ppo_mini_batch_size=1", "trainer.save_freq=1"]
    with record_reads(SophiaConfig, IGNORED) as reads:
        assert main(["--config-name", "sophia_cpu_tiny", *common, f"reason.model_path={tmp / 'reasoner'}",
                     "trainer.experiment_name=cli", "stages=[caption,reason]"]) == 0
        cfg = load_sophia_config(overrides=[*common, "trainer.experiment_name=round", "trainer.val_before_train=true"])
        gold = {q.uid: q.gold for q in questions_of(cfg, "train")}
        summary = run_pipeline(cfg, reasoner=lambda: OracleReasoner(gold))
        assert summary["update"]["steps"] == 2 and "eval/base/acc" in summary
        saved = ray.is_initialized, ray.init
        ray.is_initialized, ray.init = (lambda: False), (lambda **kw: None)
        try:
            init_ray(cfg)
        finally:
            ray.is_initialized, ray.init = saved
    return sorted(reads)


def test_every_sophia_key_is_read_or_refused(tmp_path, tiny_vlm_path):
    _, leaves = schema_paths(SophiaConfig)
    assert set(ALLOWED_UNREAD) <= set(leaves) and set(UNUSED_SHARED_KEYS) <= set(leaves)  # no stale entries
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "reads.json"
    subprocess.run([sys.executable, __file__, str(tmp_path), str(tiny_vlm_path("qwen2_5_vl")), str(out)], env=env,
                   check=True, timeout=600, cwd=ROOT)
    read = set(json.loads(out.read_text()))
    unread = sorted(set(leaves) - read - set(ALLOWED_UNREAD) - set(UNUSED_SHARED_KEYS))
    assert not unread, f"SOPHIA keys never read (wire them, or add them to UNUSED_SHARED_KEYS): {unread}"
    stale = sorted((set(ALLOWED_UNREAD) | set(UNUSED_SHARED_KEYS)) & read)
    assert not stale, f"keys listed as unread that are read after all: {stale}"


if __name__ == "__main__":  # python tests/recipes/sophia/test_dead_keys.py TMP POLICY OUT.json
    tmp_arg, policy_arg, out_arg = sys.argv[1:4]
    Path(out_arg).write_text(json.dumps(collect(Path(tmp_arg), Path(policy_arg))))
