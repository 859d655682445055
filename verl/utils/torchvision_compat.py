"""Makes a broken torchvision install importable (and hides a broken torchaudio / torchcodec).

The CPU build of vLLM pulls a PyPI torchvision whose C++ operators cannot load beside the CPU torch
build; its import then dies with "operator torchvision::nms does not exist", and transformers, which
imports torchvision whenever it is installed, fails with it. Declaring the missing operator schemas
with ``torch.library`` before torchvision is first imported lets the pure-Python parts load (we never
call these operators). Nothing installed is edited. No-op when torchvision works or is absent.

The module imports nothing of the project, so ``scripts/setup_env.sh`` copies it into the venv's
site-packages as ``verl_torchvision_compat.py`` with a ``verl_torchvision_compat.pth`` start-up line that
calls :func:`install_import_hook`: in that venv a plain ``import torchvision`` (or transformers' VLM
classes and processors) works in any Python process, with or without the project imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_LIB = None  # keeps the torch.library registration alive

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def ensure_torchvision_importable() -> None:
    """Declare torchvision's missing operator schemas if its C++ extension cannot provide them, and
    hide torchaudio / torchcodec when their native libraries cannot load (nothing here needs them)."""
    for name in ("torchaudio", "torchcodec"):
        _hide_if_broken(name)
    _declare_torchvision_schemas()


class _FirstImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` when torchvision or transformers (which looks torchaudio up
    and imports it when found) is first imported, then steps aside: returns None, and the regular finders
    load the package."""

    names = ("torchvision", "transformers")

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.names and self in sys.meta_path:
            sys.meta_path.remove(self)
            try:
                ensure_torchvision_importable()
            except Exception:  # never break an import here; torchvision then fails as it would have
                pass
        return None


def install_import_hook() -> None:
    """Interpreter start-up hook (see the module docstring): cheap, nothing is imported until torchvision
    or transformers is."""
    if not any(type(f).__name__ == "_FirstImportHook" for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImportHook())


def _hide_if_broken(name: str) -> None:
    """Make ``name`` look absent (``sys.modules[name] = None``) if importing it fails."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    try:
        importlib.import_module(name)
    except Exception:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
        sys.modules[name] = None  # find_spec() now reports the package as absent


def _declare_torchvision_schemas() -> None:
    global _LIB
    if _LIB is not None or "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    import torch

    missing = [name for name in _SCHEMAS if not _has_op(torch, name)]
    if not missing:
        return
    try:
        if _extension_loads():
            return
    except Exception:  # the extension is what is broken; fall through to declaring schemas
        pass
    _LIB = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - must outlive this call
    for name in missing:
        _LIB.define(_SCHEMAS[name])


def _has_op(torch_mod, name: str) -> bool:
    try:
        torch_mod._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _extension_loads() -> bool:
    """True when torchvision's compiled ops library loads and registers ``nms`` itself."""
    import os

    import torch

    spec = importlib.util.find_spec("torchvision")
    folder = os.path.dirname(spec.origin) if spec and spec.origin else None
    if not folder:
        return False
    for fname in os.listdir(folder):
        if fname.startswith("_C") and fname.endswith(".so"):
            torch.ops.load_library(os.path.join(folder, fname))
            return _has_op(torch, "nms")
    return False
