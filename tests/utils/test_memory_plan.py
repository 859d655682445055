"""verl.utils.memory_plan: hand-computed bytes, the settings ladder, vLLM's share of free memory, the CLI, and
the GPU check's plan at the full Qwen2.5-VL-3B shape against an 80 GB card."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
from torch import nn

from verl.config.schema import RolloutConfig
from verl.utils import memory_plan as mp

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30
COUNTS = mp.ModelCounts(total=1_000_000, vision_tower=100_000, projector=10_000, embedding=200_000, text_layers=2,
                        hidden=64, intermediate=128, kv_heads=2, head_dim=16, vocab=1000, vision_layers=2,
                        vision_hidden=32, vision_intermediate=64)
SETTINGS = mp.PlanSettings(world_size=2, update_tokens=100, log_prob_tokens=100, response_tokens=10,
                           generation_prompts=1, votes=2, prompt_tokens=20, max_new_tokens=5)


def test_parts_and_phases_by_hand():
    plan = mp.plan_memory(COUNTS, SETTINGS, free_bytes=4 * GiB)
    assert plan.parts["actor weights (fp32)"] == 2_000_000  # 1e6 x 4 B / 2 ranks
    assert plan.parts["gradients (fp32)"] == 2_000_000
    assert plan.parts["AdamW moments (fp32)"] == 4_000_000
    assert plan.parts["reference (bfloat16)"] == 1_000_000
    assert plan.parts["rollout copy (bfloat16)"] == 2_000_000  # the HF engine holds the whole model
    # root (embedding 200,000 + projector 10,000) + 2 layers of (1e6 - 2e5 - 1e5 - 1e4) / 2 = 345,000, bf16
    assert plan.parts["FSDP gathered params"] == 1_800_000
    # per token per layer (10 x 64 + 4 x 128) x 2 B = 2,304; checkpoints 2 x 100 x 64 x 2 + 2 x 100 x 2,304;
    # logits 10 rows x 1,000 x (2 + 8)
    assert plan.parts["update activations"] == 25_600 + 460_800 + 100_000
    # KV 2 x 2 layers x 2 heads x 16 x 2 B x 2 votes x (20 + 5) tokens; prefill 20 x 2,304; 2 rows x 1,000 x 12
    assert plan.parts["generation KV + prefill"] == 12_800 + 46_080 + 24_000
    assert plan.phases["update"] == 7_000_000 + 2_000_000 + 2_000_000 + 1_800_000 + 586_400
    assert plan.phases["generation"] == 7_000_000 + 2_000_000 + 82_880
    assert plan.peak_phase == "update" and plan.fits


def test_frozen_tower_sleeping_rollout_and_offload():
    s = dataclasses.replace(SETTINGS, freeze_vision_tower=True, rollout_sleeps=True, cpu_offload=True)
    plan = mp.plan_memory(COUNTS, s, free_bytes=4 * GiB)
    assert mp.trainable_parameters(COUNTS, s) == 900_000
    assert plan.parts["actor weights (fp32)"] == plan.parts["AdamW moments (fp32)"] == 0  # offloaded
    assert plan.parts["reference (bfloat16)"] == 0  # the reference shares the actor's FSDP settings
    assert plan.phases["update"] == 1_800_000 + 586_400  # gathered + activations (the rollout sleeps)
    assert "rollout copy asleep" in " ".join(plan.notes) and "vision tower frozen" in plan.notes


def test_ladder_sleeps_then_shrinks_then_freezes_only_when_allowed():
    big = dataclasses.replace(SETTINGS, world_size=1, update_tokens=8192, log_prob_tokens=8192, response_tokens=8192)
    plan = mp.plan_memory(COUNTS, big, free_bytes=10**12)
    need = plan.peak_bytes
    # free memory the sleeping rollout alone makes enough
    free = plan.phases["update"] - plan.parts["rollout copy (bfloat16)"] + mp.MIN_HEADROOM_BYTES
    plan, changes = mp.choose_settings(COUNTS, big, free)
    assert plan.fits and changes == ["rollout asleep outside generation"] and plan.peak_bytes < need
    plan, changes = mp.choose_settings(COUNTS, big, 10**12)
    assert changes == []
    plan, changes = mp.choose_settings(COUNTS, big, mp.MIN_HEADROOM_BYTES)  # nothing fits 0 bytes
    assert not plan.fits and changes[0] == "rollout asleep outside generation"
    assert changes[-1] == f"micro-batch token budget {mp.MIN_TOKENS}" and "vision tower frozen" not in changes
    _, changes = mp.choose_settings(COUNTS, big, mp.MIN_HEADROOM_BYTES, allow_freeze_vision=True)
    assert changes[-1] == "vision tower frozen"
    assert plan.refusal().startswith("memory plan: the update phase needs")


def test_vllm_share_from_free_memory():
    assert mp.vllm_memory_share(0.65, 52 * GiB, 80 * GiB) == pytest.approx(50 / 80)
    assert mp.vllm_memory_share(0.65, 79 * GiB, 80 * GiB) == 0.65
    with pytest.raises(ValueError, match="only 5.0 GiB of 80.0 GiB is free"):
        mp.vllm_memory_share(0.65, 5 * GiB, 80 * GiB)
    module = nn.Linear(10, 10)  # 110 trainable elements: 880 bytes of AdamW moments to come
    info = lambda: (52 * GiB, 80 * GiB)  # noqa: E731
    got = mp.vllm_rollout_for_free_memory(RolloutConfig(name="vllm"), "cuda:0", module, False, info)
    assert got.gpu_memory_utilization == pytest.approx((50 * GiB - 880) / (80 * GiB))
    assert mp.vllm_rollout_for_free_memory(RolloutConfig(name="vllm"), "cuda", module, True,
                                           info).gpu_memory_utilization == pytest.approx(50 / 80)
    for name, device in (("hf", "cuda"), ("vllm", "cpu")):
        assert mp.vllm_rollout_for_free_memory(RolloutConfig(name=name), device, module, False, info) \
            == RolloutConfig(name=name)


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_check_plan_at_full_3b_shape_fits_80gb(tmp_path, capsys):
    counts = mp.counts_for("qwen2.5-vl-3b")
    assert counts.total == 3_754_622_976 and counts.vision_tower + counts.projector == 668_684_288
    gc = _gpu_check()
    args = gc.parse_args([])  # the GPU defaults: full depth, bf16, 8 prompts x 32 votes (16 trained), 448 px
    cfg = gc.load_check_config(args, tmp_path / "model", tmp_path / "prompts.json", [])
    plan, changes = gc.check_plan(args, cfg, counts, mp.CARD_80GB_FREE_BYTES, 80 * 10**9)
    assert plan.fits and changes == ["rollout asleep outside generation"]
    assert plan.parts["reference (bfloat16)"] == counts.total * 2 and 60 * GiB < plan.peak_bytes < 72 * GiB
    plan, changes = gc.check_plan(args, cfg, counts, int(139 * GiB), 141 * 10**9)  # an H200: keeps the copy awake
    assert plan.fits and changes == []


def test_cli(capsys):
    assert mp.main(["--model", "qwen2.5-vl-3b", "--free-gib", "79", "actor_rollout_ref.rollout.name=hf"]) == 0
    out = capsys.readouterr().out
    assert "3.755 B parameters" in out and "fits: peak" in out
    assert mp.main(["--model", "qwen2.5-vl-3b", "--free-gib", "40", "actor_rollout_ref.rollout.name=hf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: memory plan: the update phase needs") and "40.0 GiB is free" in err
    assert mp.main(["--model", "/nonexistent"]) == 2
    assert "neither a real-shape name" in capsys.readouterr().err
