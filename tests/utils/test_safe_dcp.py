"""DCP folders load through allow-lists: real checkpoints round-trip; a planted pickle never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from verl.checkpoint import verify_checkpoint
from verl.utils.safe_dcp import UnsafeCheckpointError, load_dcp, verify_dcp

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class Planted:
    """Unpickling this creates a folder: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _model_and_optimizer(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_a_saved_model_and_optimizer_round_trip(tmp_path):
    model, opt = _model_and_optimizer(0)
    dcp.save({"model": model.state_dict(), "optim": opt.state_dict()}, checkpoint_id=str(tmp_path / "dcp"))
    verify_dcp(tmp_path / "dcp")
    fresh, fresh_opt = _model_and_optimizer(1)
    state = {"model": fresh.state_dict(), "optim": fresh_opt.state_dict()}
    load_dcp(state, tmp_path / "dcp")
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    assert state["optim"]["param_groups"][0]["betas"] == (0.8, 0.9)  # a byte entry (weights_only load)
    assert torch.equal(state["optim"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_planted_metadata_is_refused_naming_the_file_and_never_runs(tmp_path):
    step = tmp_path / "global_step_1"
    (step / "actor" / "dcp").mkdir(parents=True)
    metadata = step / "actor" / "dcp" / ".metadata"
    metadata.write_bytes(pickle.dumps(Planted(tmp_path / "code_ran")))
    for check in (lambda: verify_checkpoint(step), lambda: load_dcp({}, metadata.parent)):
        with pytest.raises(UnsafeCheckpointError, match=r"\.metadata: not loaded.*refusing to load posix.mkdir"):
            check()
    assert not (tmp_path / "code_ran").exists()


def test_planted_byte_entry_is_refused_naming_the_entry_and_never_runs(tmp_path):
    """A non-tensor value goes into the .distcp file as a pickle that torch's own planner would run."""
    marker = tmp_path / "code_ran"
    dcp.save({"w": torch.ones(2), "hp": Planted(marker)}, checkpoint_id=str(tmp_path / "dcp"))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match=r"__0_0\.distcp \(entry 'hp'\): not loaded"):
        verify_dcp(tmp_path / "dcp")
    with pytest.raises(UnsafeCheckpointError, match="entry 'hp'"):
        load_dcp({"w": torch.zeros(2), "hp": None}, tmp_path / "dcp")
    assert not marker.exists()
