"""Checkpoint layout, marker / resume semantics, trainer state round trip, pruning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from verl.checkpoint import (
    MARKER,
    STATE_FILE,
    CheckpointManager,
    load_trainer_state,
    prune,
    read_latest,
    resolve_resume,
    save_trainer_state,
    step_dir,
    write_latest,
)
from verl.utils.seed import rng_state


def _save_step(mgr: CheckpointManager, step: int, epoch: int = 0) -> None:
    folder = mgr.prepare(step)
    (folder / "actor").mkdir()
    (folder / "actor" / "model.safetensors").write_bytes(b"weights")
    mgr.commit(step, {"step": step, "epoch": epoch, "dataloader": {"cursor": step * 4}})


def test_step_dir_names(tmp_path):
    assert step_dir(tmp_path, 12) == tmp_path / "global_step_12"
    with pytest.raises(ValueError):
        step_dir(tmp_path, -1)


def test_trainer_state_roundtrip_json_and_tensors(tmp_path):
    gen = torch.Generator().manual_seed(3)
    state = {"step": 5, "epoch": 1, "rng": rng_state(),
             "dataloader": {"sampler": {"generator": gen.get_state(), "order": np.arange(4, dtype=np.int64)},
                            "seen": [1, 2]}}
    path = save_trainer_state(tmp_path / "global_step_5", state)
    payload = json.loads(path.read_text())  # plain JSON, tensors replaced by a stub
    assert payload["step"] == 5 and payload["dataloader"]["sampler"]["generator"] == {
        "__tensor__": "dataloader/sampler/generator"}
    loaded = load_trainer_state(tmp_path / "global_step_5")
    assert torch.equal(loaded["dataloader"]["sampler"]["generator"], gen.get_state())
    order = loaded["dataloader"]["sampler"]["order"]
    assert order.dtype == np.int64 and order.tolist() == [0, 1, 2, 3]
    assert loaded["rng"] == json.loads(json.dumps(state["rng"])) and loaded["dataloader"]["seen"] == [1, 2]
    assert not list((tmp_path / "global_step_5").glob(".*tmp*"))  # no temporary files left behind


def test_trainer_state_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="int 'step'"):
        save_trainer_state(tmp_path / "s", {"epoch": 1})
    with pytest.raises(TypeError, match="dataloader/obj"):
        save_trainer_state(tmp_path / "s", {"step": 1, "dataloader": {"obj": object()}})
    with pytest.raises(ValueError, match="non-finite.*loss"):
        save_trainer_state(tmp_path / "s", {"step": 1, "loss": float("nan")})
    with pytest.raises(FileNotFoundError, match="missing"):
        load_trainer_state(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.*trainer_state\.json"):
        load_trainer_state(tmp_path / "bad")


def test_marker_written_after_commit_and_auto_resume(tmp_path):
    mgr = CheckpointManager(tmp_path / "ckpt")
    assert resolve_resume(mgr.root, "auto") is None  # fresh start: nothing there
    _save_step(mgr, 2)
    assert (mgr.root / MARKER).read_text().strip() == "2"
    assert mgr.resolve_resume("auto") == mgr.root / "global_step_2"
    assert mgr.load(mgr.resolve_resume("auto"))["dataloader"] == {"cursor": 8}
    assert mgr.resolve_resume("disable") is None


def test_partial_step_is_ignored_and_cleared(tmp_path):
    mgr = CheckpointManager(tmp_path)
    _save_step(mgr, 2)
    partial = mgr.prepare(4)  # crash after the actor wrote its files, before commit
    (partial / "actor").mkdir()
    (partial / "actor" / "half.bin").write_bytes(b"x")
    assert resolve_resume(tmp_path, "auto") == tmp_path / "global_step_2"
    with pytest.raises(FileNotFoundError, match="global_step_4"):
        write_latest(tmp_path, 4)  # no trainer state yet: cannot be marked complete
    assert read_latest(tmp_path) == 2
    _save_step(mgr, 4)  # saving step 4 again clears the leftovers
    assert not (partial / "actor" / "half.bin").exists()
    assert resolve_resume(tmp_path, "auto") == tmp_path / "global_step_4"
    with pytest.raises(FileExistsError, match="global_step_4"):
        mgr.prepare(4)  # the only known-good checkpoint is never overwritten


def test_marker_without_folder_and_bad_marker(tmp_path):
    (tmp_path / MARKER).write_text("7\n")
    with pytest.raises(FileNotFoundError, match="global_step_7"):
        resolve_resume(tmp_path, "auto")
    (tmp_path / MARKER).write_text("seven")
    with pytest.raises(ValueError, match="latest_checkpointed_iteration.txt.*seven"):
        resolve_resume(tmp_path, "auto")


def test_resume_path_mode(tmp_path):
    mgr = CheckpointManager(tmp_path)
    _save_step(mgr, 3)
    assert resolve_resume(tmp_path, "resume_path", tmp_path / "global_step_3") == tmp_path / "global_step_3"
    with pytest.raises(FileNotFoundError, match="global_step_9"):
        resolve_resume(tmp_path, "resume_path", tmp_path / "global_step_9")
    (tmp_path / "global_step_5").mkdir()
    with pytest.raises(FileNotFoundError, match="global_step_5.*trainer_state.json"):
        resolve_resume(tmp_path, "resume_path", tmp_path / "global_step_5")
    with pytest.raises(ValueError, match="needs resume_path"):
        resolve_resume(tmp_path, "resume_path")
    with pytest.raises(ValueError, match="'latest'.*auto"):
        resolve_resume(tmp_path, "latest")


def test_prune_keeps_newest_and_spares_in_progress(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        _save_step(mgr, step)
    assert sorted(p.name for p in tmp_path.glob("global_step_*")) == ["global_step_2", "global_step_3"]
    mgr.prepare(4)  # a save in progress (above the marker) is never pruned
    assert prune(tmp_path, 1) == [tmp_path / "global_step_2"]
    assert sorted(p.name for p in tmp_path.glob("global_step_*")) == ["global_step_3", "global_step_4"]
    assert prune(tmp_path, None) == []
    with pytest.raises(ValueError, match="keep"):
        prune(tmp_path, 0)
    with pytest.raises(ValueError, match="does not match"):
        mgr.commit(4, {"step": 5})
