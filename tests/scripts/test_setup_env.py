"""The venv scripts/setup_env.sh builds: a plain Python process (nothing of the project imported, no
PYTHONPATH, outside the repository) imports torchvision and loads every tiny model and its processor with
plain transformers; the set-up (re)installs the start-up hook on an existing venv and is idempotent."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from verl.models.family import FAMILIES

ROOT = Path(__file__).resolve().parents[2]

PLAIN = """
import sys
import torchvision
import transformers
from PIL import Image
from transformers import AutoConfig, AutoProcessor

for folder in sys.argv[1:]:
    model = getattr(transformers, AutoConfig.from_pretrained(folder).architectures[0]).from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    token = processor.image_token
    inputs = processor(text=[token + " which digit?"], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    assert inputs["pixel_values"].numel() > 0, folder
    print("loaded", type(model).__name__, type(processor).__name__)
leaked = sorted(m for m in sys.modules if m == "verl" or m.startswith(("verl.", "recipes")))
assert not leaked, leaked
"""


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}


def test_a_plain_process_loads_every_model_and_processor(tiny_vlm_path, tmp_path):
    folders = [str(tiny_vlm_path(arch)) for arch in FAMILIES]
    proc = subprocess.run([sys.executable, "-c", PLAIN, *folders], cwd=tmp_path, env=_plain_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"run scripts/setup_env.sh to install the start-up hook into {sys.prefix}\n"
                                  + proc.stderr[-3000:])
    assert proc.stdout.count("loaded ") == len(folders), proc.stdout


def test_setup_installs_the_hook_on_an_existing_venv_and_is_idempotent(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    extras = "test"
    reqs = b"".join((ROOT / f).read_bytes() for f in ("setup.py", "requirements.txt", "requirements-test.txt"))
    (venv / ".verl-install-stamp").write_text(f"{hashlib.sha256(reqs).hexdigest()[:16]}-{extras}\n")  # installed
    env = {**_plain_env(), "VERL_VENV": str(venv), "VERL_EXTRAS": extras}
    runs = [subprocess.run(["bash", str(ROOT / "scripts" / "setup_env.sh")], env=env, capture_output=True,
                           text=True, timeout=120, check=True) for _ in range(2)]
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert (site / "verl_torchvision_compat.py").read_text() == (ROOT / "verl/utils/torchvision_compat.py").read_text()
    assert "install_import_hook()" in (site / "verl_torchvision_compat.pth").read_text()
    assert runs[0].stdout.count("[setup] wrote") == 2 and runs[1].stdout == "", [r.stdout for r in runs]
    probe = "import sys; print(any(type(f).__name__ == '_FirstImportHook' for f in sys.meta_path))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=_plain_env(),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    assert sysconfig.get_paths()["purelib"] != str(site)  # the test venv, not the one running the tests
