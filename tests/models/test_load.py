"""load_vlm / load_processor: clear errors, vision-tower helpers, processors without torchvision."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from verl.models.family import FAMILIES
from verl.models.load import load_processor, load_vlm

ARCHS = sorted(FAMILIES)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        load_vlm(missing)


def test_missing_config(tmp_path, tiny_vlm_path):
    folder = _copy(tiny_vlm_path("qwen2_vl"), tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*m' has no config.json"):
        load_vlm(folder)


def test_missing_weights(tmp_path, tiny_vlm_path):
    folder = _copy(tiny_vlm_path("qwen2_5_vl"), tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no weights.*model.safetensors"):
        load_vlm(folder)
    load_processor(folder)  # the processor alone needs no weights


def test_missing_tokenizer(tmp_path, tiny_vlm_path):
    folder = _copy(tiny_vlm_path("internvl"), tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files"):
        load_vlm(folder)


def test_unsupported_model_type(tmp_path, tiny_vlm_path):
    folder = _copy(tiny_vlm_path("qwen2_vl"), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llava"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        load_vlm(folder)
    msg = str(err.value)
    assert str(folder) in msg and "'llava'" in msg and all(t in msg for t in FAMILIES)


@pytest.mark.parametrize("arch", ARCHS)
def test_load_processor_is_image_only_pil(tiny_vlm_path, arch):
    from transformers.image_processing_backends import PilBackend

    from verl.models.processors import processor_class_for

    proc = load_processor(tiny_vlm_path(arch))
    assert type(proc) is processor_class_for(arch)
    assert isinstance(proc.image_processor, PilBackend)
    assert not hasattr(proc, "video_processor")
    assert proc.chat_template and "im_start" in proc.chat_template  # the folder's template, not a default
    assert proc.image_token_id == load_vlm(tiny_vlm_path(arch))[0].config.image_token_id


@pytest.mark.parametrize("arch", ARCHS)
def test_vision_modules_from_registry(tiny_vlm_path, arch):
    """The registry's tower / projector paths name real modules; the projector(s) sit inside or beside the tower."""
    from verl.models.vlm_forward import vision_modules

    model, _ = load_vlm(tiny_vlm_path(arch), dtype=torch.bfloat16, attn_implementation=None)
    assert next(model.parameters()).dtype == torch.bfloat16
    mods = vision_modules(model)
    names = {id(m): n for n, m in model.named_modules()}
    assert names[id(mods["tower"])] == f"model.{FAMILIES[arch].tower}"
    projector_params = {id(p) for p in mods["projector"].parameters()}
    assert projector_params and projector_params <= {id(p) for p in model.parameters()}
    vision = projector_params | {id(p) for p in mods["tower"].parameters()}
    n_lm = sum(p.numel() for p in model.parameters() if id(p) not in vision)
    assert 0 < n_lm < sum(p.numel() for p in model.parameters())


def test_saved_processor_folder_stays_stock(tmp_path, tiny_vlm_path):
    """save_pretrained of our subclass writes stock class names + a video config (vLLM reads such folders)."""
    proc = load_processor(tiny_vlm_path("qwen2_5_vl"))
    out = tmp_path / "saved"
    proc.save_pretrained(out)
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        data = json.loads((out / name).read_text())
        assert data.get("processor_class", "Qwen2_5_VLProcessor") == "Qwen2_5_VLProcessor", name
    assert (out / "video_preprocessor_config.json").is_file()
    again = load_processor_from(out, "qwen2_5_vl")
    assert again.image_processor.to_dict()["size"] == proc.image_processor.to_dict()["size"]


def load_processor_from(folder: Path, model_type: str):
    from verl.models.processors import processor_class_for

    return processor_class_for(model_type).from_pretrained(str(folder), local_files_only=True)


def test_autoprocessor_resolves_registered_name(tmp_path, tiny_vlm_path):
    """A folder naming our class (e.g. written by hand) resolves through AutoProcessor to the full processor."""
    from transformers import AutoProcessor

    folder = _copy(tiny_vlm_path("qwen2_vl"), tmp_path / "m")
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        data = json.loads((folder / name).read_text())
        data["processor_class"] = "Qwen2VLImageProcessorOnly"
        (folder / name).write_text(json.dumps(data))
    proc = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    assert type(proc).__name__ == "Qwen2VLImageProcessorOnly"
    assert hasattr(proc, "image_processor") and hasattr(proc, "tokenizer")


_NO_TORCHVISION = textwrap.dedent("""
    import sys
    sys.modules["torchvision"] = None  # behave as if torchvision were not installed
    from PIL import Image
    import torch
    from verl.models.load import load_vlm
    model, proc = load_vlm(sys.argv[1])
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
        "text": "digit?"}]}], add_generation_prompt=True, tokenize=False)
    inputs = proc(images=[Image.new("RGB", (56, 56), "white")], text=[text], return_tensors="pt")
    model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert sys.modules.get("torchvision") is None, "torchvision was imported"
    print("OK", type(proc.image_processor).__name__)
""")


def test_works_without_torchvision(tiny_vlm_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", _NO_TORCHVISION, str(tiny_vlm_path("qwen2_5_vl"))],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK Qwen2VLImageProcessorPil" in res.stdout
