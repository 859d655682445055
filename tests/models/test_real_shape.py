"""Real-shaped folders (published configs, real Qwen vocabulary and tokenizer, random weights).

What is reduced in the folders these tests build: depth (2 text / 2 vision layers instead of 36 / 32 for
Qwen2.5-VL-3B) and width (text hidden 256 = 2 heads of the published head dim 128 with 1 KV head, instead of
2048 = 16 heads / 2 KV heads; vision 160 = 2 heads of the published 80 instead of 1280), to keep CI on 2 cores
within budget (the full-width 3B embedding alone is 151,936 x 2,048 = 311 M parameters). Kept: the vocabulary
(151,936 rows), tokenizer, special-token ids, chat template, mrope sections [16, 24, 24], vision window size and
full-attention blocks (the last one when depth is reduced), image processor (patch 14, merge 2, min/max pixels).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from verl.models.real_shape import REAL_SHAPES, build_real_shape, shape_config

# folders built (Qwen2-VL-2B shares Qwen2.5-VL's image processor and tokenizer; its config is checked above)
SMALL = {"qwen2.5-vl-3b": (256, 160), "qwen3-vl-4b": (160, 128), "internvl3-2b": (256, 128)}
IMAGE_TOKEN = {"qwen2.5-vl-3b": 151655, "qwen3-vl-4b": 151655, "internvl3-2b": 151667}
# a 448x448 image: 32x32 patches of 14 px merged 2x2 (Qwen2.5-VL), 28x28 of 16 px (Qwen3-VL), one 448 tile
TOKENS_448 = {"qwen2.5-vl-3b": 256, "qwen3-vl-4b": 196, "internvl3-2b": 256}


@pytest.fixture(scope="session")
def real_shape_path(tmp_path_factory):
    """Factory: ``real_shape_path(model)`` -> reduced-depth, reduced-width folder, built once per session."""
    cache: dict[str, Path] = {}

    def _get(model: str = "qwen2.5-vl-3b") -> Path:
        if model not in cache:
            hidden, vision_hidden = SMALL[model]
            cache[model] = build_real_shape(model, tmp_path_factory.mktemp(model.replace(".", "_")),
                                            hidden=hidden, vision_hidden=vision_hidden)
        return cache[model]

    return _get


def test_published_config_values():
    q25 = shape_config("qwen2.5-vl-3b", full=True)
    t, v = q25.text_config, q25.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
            t.num_key_value_heads, t.vocab_size) == (2048, 11008, 36, 16, 2, 151936)
    assert t.rope_parameters["mrope_section"] == [16, 24, 24] and t.rope_parameters["rope_theta"] == 1e6
    assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.out_hidden_size, v.window_size,
            v.fullatt_block_indexes, v.patch_size, v.spatial_merge_size) == (32, 1280, 3420, 16, 2048, 112,
                                                                              [7, 15, 23, 31], 14, 2)
    assert q25.tie_word_embeddings and q25.image_token_id == 151655 and q25.vision_start_token_id == 151652
    q2 = shape_config("qwen2-vl-2b", full=True)
    assert (q2.text_config.hidden_size, q2.text_config.num_hidden_layers, q2.text_config.num_attention_heads,
            q2.text_config.num_key_value_heads, q2.text_config.intermediate_size) == (1536, 28, 12, 2, 8960)
    assert (q2.vision_config.depth, q2.vision_config.embed_dim, q2.vision_config.num_heads,
            q2.vision_config.mlp_ratio) == (32, 1280, 16, 4)
    iv = shape_config("internvl3-2b", full=True)
    assert (iv.text_config.hidden_size, iv.text_config.num_hidden_layers, iv.text_config.vocab_size,
            iv.vision_config.hidden_size, iv.vision_config.num_hidden_layers, iv.image_seq_length,
            iv.image_token_id, iv.tie_word_embeddings) == (1536, 28, 151674, 1024, 24, 256, 151667, False)


@pytest.mark.parametrize("model,billions", [("qwen2-vl-2b", 2.209), ("qwen2.5-vl-3b", 3.755), ("qwen3-vl-2b", 2.128),
                                            ("qwen3-vl-4b", 4.438), ("internvl3-2b", 2.089)])
def test_full_shapes_have_the_published_parameter_counts(model, billions):
    from verl.models.load import model_class

    with torch.device("meta"):
        net = model_class(REAL_SHAPES[model].arch)(shape_config(model, full=True))
    assert sum(p.numel() for p in net.parameters()) / 1e9 == pytest.approx(billions, abs=5e-4)


def test_reduced_shapes_keep_head_dim_and_mrope():
    cfg = shape_config("qwen2.5-vl-3b", layers=3, vision_layers=9, hidden=512, vision_hidden=160)
    t, v = cfg.text_config, cfg.vision_config
    assert t.hidden_size // t.num_attention_heads == 128 and t.num_attention_heads == 4
    assert t.num_key_value_heads == 1 and t.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (t.num_hidden_layers, v.depth, v.fullatt_block_indexes, v.hidden_size // v.num_heads) == (3, 9, [7], 80)
    assert shape_config("qwen2.5-vl-3b", vision_layers=2).vision_config.fullatt_block_indexes == [1]
    with pytest.raises(ValueError, match="hidden=200 must be a positive multiple of 128"):
        shape_config("qwen2.5-vl-3b", hidden=200)
    for name, (hidden, inter, layers, heads) in {"qwen3-vl-4b": (2560, 9728, 36, 32),
                                                 "qwen3-vl-2b": (2048, 6144, 28, 16)}.items():
        q3 = shape_config(name, full=True)
        t, v = q3.text_config, q3.vision_config
        assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
                t.head_dim, t.vocab_size, t.max_position_embeddings) == (hidden, inter, layers, heads, 8, 128, 151936,
                                                                         262144)
        assert t.rope_parameters == {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                     "mrope_interleaved": True}
        assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.out_hidden_size, v.patch_size,
                v.spatial_merge_size, v.deepstack_visual_indexes, v.num_position_embeddings) == (
            24, 1024, 4096, 16, hidden, 16, 2, [5, 11, 17], 2304)
        assert q3.tie_word_embeddings and (q3.image_token_id, q3.vision_start_token_id) == (151655, 151652)
    assert shape_config("qwen3-vl-4b").vision_config.deepstack_visual_indexes == [1]  # 2 blocks: the last one
    assert shape_config("qwen3-vl-4b", vision_layers=12).vision_config.deepstack_visual_indexes == [5, 11]

    with pytest.raises(ValueError, match="unknown real-shape model 'qwen9'"):
        shape_config("qwen9")


def test_folder_reads_like_the_release(real_shape_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from verl.models.load import load_vlm

    folder = real_shape_path("qwen2.5-vl-3b")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all((folder / s).is_file() for s in shards)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json", "video_preprocessor_config.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643] and gen["pad_token_id"] == 151643
    stock = AutoProcessor.from_pretrained(folder)
    assert type(stock).__name__ == "Qwen2_5_VLProcessor"
    assert type(stock.tokenizer).__name__ == "Qwen2Tokenizer" and stock.tokenizer("Hello world")["input_ids"] == [9707, 1879]
    hf = AutoModelForImageTextToText.from_pretrained(folder)
    model, processor = load_vlm(folder, dtype=torch.float32)
    assert type(hf) is type(model) and model.get_input_embeddings().weight.shape == (151936, 256)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied, as released
    for k, v in hf.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.float(), msg=k)


@pytest.mark.parametrize("model", sorted(SMALL))
def test_448_image_tokens_and_a_forward(real_shape_path, model):
    from verl.models.load import load_vlm

    net, processor = load_vlm(real_shape_path(model), dtype=torch.float32)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which digit is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[Image.new("RGB", (448, 448), (120, 30, 200))], return_tensors="pt")
    assert int((enc["input_ids"] == IMAGE_TOKEN[model]).sum()) == TOKENS_448[model]
    with torch.no_grad():
        logits = net(**enc).logits
    assert logits.shape[-1] == REAL_SHAPES[model].vocab and torch.isfinite(logits).all()


CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config")


def _config(model: Path, data: Path, tmp: Path, *extra: str):
    from verl.config.loader import load_config

    files = f"[{data / 'test_noise_mc.json'}]"
    return load_config("ttrv_cpu_tiny", [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
        "data.train_batch_size=2", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1", "trainer.val_before_train=false",
        f"trainer.default_local_dir={tmp / 'ckpt'}", f"trainer.log_dir={tmp / 'logs'}", "trainer.logger=[jsonl]",
        *extra,
    ], config_dir=CONFIG_DIR)


def _fit(cfg, records):
    """Train with a fresh worker group; returns (full actor params after, metric rows)."""
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, ["jsonl"],
                      log_dir=cfg.trainer.log_dir, config=cfg)
    trainer = Trainer(cfg, records, records[:2], tracker)
    try:
        trainer.init_workers()
        trainer.fit()
        after = trainer.wg.full_state_dict()[0]
    finally:
        trainer.close()
        tracker.finish()
    log = Path(cfg.trainer.log_dir) / cfg.trainer.project_name / cfg.trainer.experiment_name / "metrics.jsonl"
    return after, [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_ttrv_steps_checkpoint_resume_export(ray_local, real_shape_path, digits_dir, tmp_path):
    """One FSDP2 worker + HF rollout on the real-shaped Qwen2.5-VL: a TTRV step, its checkpoint, a resumed
    second step, and the export of the checkpoint to a plain HF folder that loads back exactly (two workers
    and sharded export: tests/trainer/test_fit.py; two workers cost ~5x the update time here)."""
    import subprocess
    import sys

    import numpy as np

    from verl.data.formats import load_records
    from verl.models.load import load_vlm

    folder = real_shape_path("qwen2.5-vl-3b")
    records = load_records([digits_dir / "test_noise_mc.json"])[:4]
    common = ("actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.val_sample_n=1", "trainer.save_freq=1",
              "trainer.n_gpus_per_node=1")
    _, rows1 = _fit(_config(folder, digits_dir, tmp_path, "trainer.total_training_steps=1", *common), records)
    assert (tmp_path / "ckpt" / "global_step_1").is_dir()
    params, rows2 = _fit(_config(folder, digits_dir, tmp_path, "trainer.total_training_steps=2", *common), records)
    assert [r["step"] for r in rows1 if "actor/pg_loss" in r] == [1]
    assert [r["step"] for r in rows2 if "actor/pg_loss" in r] == [1, 2]  # same log: the second run only added 2
    step2 = next(r for r in rows2 if "actor/pg_loss" in r)
    assert np.isfinite(step2["actor/pg_loss"]) and step2["training/rollout_probs_diff_max"] < 1e-3
    out = tmp_path / "exported"
    subprocess.run([sys.executable, "-m", "verl.trainer.export", str(tmp_path / "ckpt" / "global_step_2"),
                    str(out)], check=True, timeout=300)
    exported, processor = load_vlm(out, dtype=torch.float32)
    assert processor.tokenizer("Hello world")["input_ids"] == [9707, 1879]
    sd = exported.state_dict()
    for k, v in params.items():
        np.testing.assert_allclose(sd[k].numpy(), v, rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_ttrv_step_with_vllm_rollout(ray_local, real_shape_path, digits_dir, tmp_path):
    """One worker with vLLM (CPU) rollout on the real-shaped Qwen2.5-VL: vLLM reads the folder, the weight sync
    after the update reaches it (rollout and actor log-probs agree at step 2)."""
    pytest.importorskip("vllm")
    from verl.data.formats import load_records

    records = load_records([digits_dir / "test_noise_mc.json"])[:4]
    cfg = _config(real_shape_path("qwen2.5-vl-3b"), digits_dir, tmp_path, "actor_rollout_ref.rollout.name=vllm",
                  "trainer.n_gpus_per_node=1", "trainer.total_training_steps=2", "trainer.save_freq=0",
                  "actor_rollout_ref.rollout.val_sample_n=1")
    _, rows = _fit(cfg, records)
    steps = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["training/rollout_probs_diff_max"] < 1e-3 for r in steps)
