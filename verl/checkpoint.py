"""Checkpoint layout, atomic trainer-state files, latest marker, resume resolution and pruning.

Layout (verl's)::

    <root>/global_step_<N>/actor/...              written by the actor worker(s)
    <root>/global_step_<N>/trainer_state.json     step, epoch, data-loader state, RNG state (JSON)
    <root>/global_step_<N>/trainer_tensors.pt     tensors found in the state (torch.save, optional)
    <root>/latest_checkpointed_iteration.txt      "<N>", written atomically once step N is complete

A step folder counts only once the marker names it: a crash while saving leaves the marker on the
previous step, so auto-resume never picks a partial folder.

Nothing read here runs code: the trainer state is JSON, its tensors are read with
``torch.load(weights_only=True)``, and the actor's DCP files (``actor/dcp/.metadata`` and the byte entries
of ``*.distcp``, both pickles) go through allow-lists (:mod:`verl.utils.safe_dcp`). :func:`verify_checkpoint`
checks a step folder before anything is loaded from it, wherever it lies.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MARKER = "latest_checkpointed_iteration.txt"
STATE_FILE = "trainer_state.json"
TENSOR_FILE = "trainer_tensors.pt"
RESUME_MODES = ("auto", "disable", "resume_path")
_STEP_RE = re.compile(r"^global_step_(\d+)$")


# ---------------------------------------------------------------------------- paths and markers
def step_dir(root: str | os.PathLike, step: int) -> Path:
    """``<root>/global_step_<step>``."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative int, got {step!r}")
    return Path(root) / f"global_step_{step}"


def parse_step(path: str | os.PathLike) -> int:
    """The N of a ``global_step_N`` folder; ``ValueError`` naming the path otherwise."""
    m = _STEP_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"not a checkpoint step folder (expected global_step_<N>): {path}")
    return int(m.group(1))


def list_steps(root: str | os.PathLike) -> list[int]:
    """Steps of all ``global_step_N`` folders under ``root`` (complete or not), ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name)))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then ``os.replace`` it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_latest(root: str | os.PathLike) -> int | None:
    """Step named by the marker file, or None if there is no marker."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return None
    text = marker.read_text(encoding="utf-8").strip()
    if not text.isdigit():
        raise ValueError(f"{marker}: expected a step number, found {text!r}")
    return int(text)


def write_latest(root: str | os.PathLike, step: int) -> None:
    """Atomically point the marker at ``step``; the step folder must already hold its trainer state."""
    folder = step_dir(root, step)
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"refusing to mark step {step} complete: {folder / STATE_FILE} is missing")
    atomic_write_text(Path(root) / MARKER, f"{step}\n")


# ---------------------------------------------------------------------------- trainer state
def _split_tensors(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``obj``; tensors move to ``tensors`` and leave a ``{"__tensor__": name}`` stub."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().clone()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"trainer state: key {k!r} under {path or '<root>'} must be a string")
            out[k] = _split_tensors(v, f"{path}/{k}" if path else k, tensors)
        return out
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"trainer state: non-finite float at {path or '<root>'}")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"trainer state: value of type {type(obj).__name__} at {path or '<root>'} is not "
                    "JSON-serializable (use numbers, strings, lists, dicts, numpy arrays or tensors)")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            name = obj["__tensor__"]
            if name not in tensors:
                raise KeyError(f"{where}: tensor {name!r} referenced by {STATE_FILE} is missing from {TENSOR_FILE}")
            return tensors[name]
        if set(obj) == {"__ndarray__", "dtype"}:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _join_tensors(v, tensors, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors, where) for v in obj]
    return obj


def save_trainer_state(step_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (must hold an int ``step``) to ``<step_dir>/trainer_state.json`` atomically.

    Tensors anywhere in ``state`` go to ``trainer_tensors.pt`` (written first); numpy arrays are stored
    as lists with their dtype. Returns the JSON path.
    """
    folder = Path(step_dir)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        raise ValueError(f"trainer state for {folder} must be a dict with an int 'step'")
    tensors: dict[str, torch.Tensor] = {}
    payload = _split_tensors(state, "", tensors)
    folder.mkdir(parents=True, exist_ok=True)
    if tensors:
        tmp = folder / f".{TENSOR_FILE}.tmp{os.getpid()}"
        torch.save(tensors, tmp)
        os.replace(tmp, folder / TENSOR_FILE)
    path = folder / STATE_FILE
    # One top-level entry per line: readable with `cat`, while long RNG lists stay on one line each.
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in payload.items())
    atomic_write_text(path, "{\n" + body + "\n}\n")
    return path


def load_trainer_state(step_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``<step_dir>/trainer_state.json`` (and its tensors); errors name the file."""
    folder = Path(step_dir)
    path = folder / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trainer state in checkpoint folder {folder} (missing {STATE_FILE})")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: corrupt trainer state ({err})") from None
    if not isinstance(payload, dict) or "step" not in payload:
        raise ValueError(f"{path}: trainer state must be a JSON object with a 'step' field")
    tensor_path = folder / TENSOR_FILE
    tensors = torch.load(tensor_path, map_location="cpu", weights_only=True) if tensor_path.is_file() else {}
    return _join_tensors(payload, tensors, path)


# ---------------------------------------------------------------------------- resume and pruning
def resolve_resume(root: str | os.PathLike, mode: str = "auto", resume_path: str | os.PathLike | None = None
                   ) -> Path | None:
    """Which step folder to resume from.

    ``auto``: the folder named by the marker, or None when there is no marker (fresh start); folders
    without a marker entry (partial saves) are never picked. ``disable``: None. ``resume_path``: the given
    folder, which must exist and contain ``trainer_state.json``.
    """
    if mode not in RESUME_MODES:
        raise ValueError(f"unknown resume mode {mode!r}; expected one of {RESUME_MODES}")
    if mode == "disable":
        return None
    if mode == "resume_path":
        if resume_path is None:
            raise ValueError("resume mode 'resume_path' needs resume_path to be set")
        folder = Path(resume_path)
        if not folder.is_dir():
            raise FileNotFoundError(f"resume_path does not exist or is not a folder: {folder}")
        if not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(f"resume_path {folder} is not a complete checkpoint (missing {STATE_FILE})")
        return folder
    latest = read_latest(root)
    if latest is None:
        return None
    folder = step_dir(root, latest)
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{Path(root) / MARKER} names step {latest}, but {folder / STATE_FILE} is missing")
    return folder


def prune(root: str | os.PathLike, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` complete step folders (``keep=None``: keep all).

    Only folders at or below the marker's step are considered, so a save in progress is never touched;
    the marker's folder is always kept. Returns the removed folders.
    """
    if keep is None:
        return []
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"prune: keep must be None or an int >= 1, got {keep!r}")
    latest = read_latest(root)
    if latest is None:
        return []
    candidates = [s for s in list_steps(root) if s <= latest]
    removed = []
    for step in candidates[:-keep] if len(candidates) > keep else []:
        if step == latest:
            continue
        folder = step_dir(root, step)
        shutil.rmtree(folder)
        removed.append(folder)
    if removed:
        logger.info("pruned checkpoints: %s", [p.name for p in removed])
    return removed


def verify_checkpoint(folder: str | os.PathLike) -> None:
    """Read every DCP pickle under the step ``folder`` through the allow-lists
    (:func:`verl.utils.safe_dcp.verify_dcp`); an :class:`~verl.utils.safe_dcp.UnsafeCheckpointError`
    (a ``ValueError``) names the file that would run code."""
    from verl.utils.safe_dcp import METADATA_FILE, read_metadata, verify_dcp

    for metadata in sorted(Path(folder).rglob("*.metadata")):
        if metadata.name == METADATA_FILE:
            verify_dcp(metadata.parent)  # the metadata and the byte entries it points to
        else:
            read_metadata(metadata)  # a rank-local __<rank>.metadata


class CheckpointManager:
    """Owns one checkpoint root: ``prepare(step)`` -> workers write ``actor/`` -> ``commit(step, state)``.

    ``commit`` writes the trainer state, then the marker (atomically), then prunes to ``keep`` folders.
    """

    def __init__(self, root: str | os.PathLike, keep: int | None = None) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"CheckpointManager: keep must be None or an int >= 1, got {keep!r}")
        self.root = Path(root)
        self.keep = keep

    def step_dir(self, step: int) -> Path:
        return step_dir(self.root, step)

    def actor_dir(self, step: int) -> Path:
        return self.step_dir(step) / "actor"

    def latest_step(self) -> int | None:
        return read_latest(self.root)

    def prepare(self, step: int) -> Path:
        """Create an empty folder for ``step`` (clearing leftovers of an earlier failed save).

        Refuses to overwrite the folder the marker names, which is the only known-good checkpoint.
        """
        folder = self.step_dir(step)
        if step == self.latest_step():
            raise FileExistsError(f"checkpoint {folder} is the latest complete one; refusing to overwrite it")
        if folder.exists():
            logger.warning("removing incomplete checkpoint folder %s before saving again", folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def commit(self, step: int, state: dict[str, Any]) -> Path:
        """Write the trainer state of ``step``, mark it latest, prune; returns the step folder."""
        folder = self.step_dir(step)
        if not folder.is_dir():
            raise FileNotFoundError(f"checkpoint folder {folder} does not exist; call prepare({step}) first")
        if state.get("step") != step:
            raise ValueError(f"trainer state step {state.get('step')!r} does not match checkpoint step {step}")
        save_trainer_state(folder, state)
        write_latest(self.root, step)
        prune(self.root, self.keep)
        return folder

    def resolve_resume(self, mode: str = "auto", resume_path: str | os.PathLike | None = None) -> Path | None:
        return resolve_resume(self.root, mode, resume_path)

    def load(self, folder: str | os.PathLike) -> dict[str, Any]:
        return load_trainer_state(folder)
