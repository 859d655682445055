from __future__ import annotations

import numpy as np
import pytest

from verl.checkpoint import load_trainer_state, save_trainer_state
from verl.data.dataset import EpochSampler, RLDataset, make_dataloader
from verl.data.formats import Record


def _records(n: int) -> list[Record]:
    return [Record(uid=f"f:{i}", index=i, data_source="s", prompt=[{"role": "user", "content": f"<image> q{i}"}],
                   images=[f"/img/{i}.png"], ground_truth=str(i % 4), options={"A": "x", "B": "y"})
            for i in range(n)]


def _uids(batches):
    return [[r.uid for r in b] for b in batches]


def _position(loader) -> tuple[int, int]:
    return loader.sampler.epoch, loader.sampler.offset


def test_dataset_and_batches_no_shuffle():
    recs = _records(5)
    assert len(RLDataset(recs)) == 5 and RLDataset(recs)[3] is recs[3]
    dl = make_dataloader(recs, batch_size=2, shuffle=False, seed=0, drop_last=False)
    assert len(dl) == 3
    assert _uids(dl) == [["f:0", "f:1"], ["f:2", "f:3"], ["f:4"]]
    assert _position(dl) == (0, 5)
    assert _uids(dl) == [["f:0", "f:1"], ["f:2", "f:3"], ["f:4"]] and _position(dl) == (1, 5)
    dl2 = make_dataloader(recs, batch_size=2, shuffle=False, seed=0, drop_last=True)
    assert len(dl2) == 2 and _uids(dl2) == [["f:0", "f:1"], ["f:2", "f:3"]]


def test_shuffle_is_seeded_and_changes_per_epoch():
    recs = _records(10)
    a = make_dataloader(recs, batch_size=3, shuffle=True, seed=1)
    b = make_dataloader(recs, batch_size=3, shuffle=True, seed=1)
    e0a, e0b = _uids(a), _uids(b)
    assert e0a == e0b
    assert sorted(u for bt in e0a for u in bt) == sorted(r.uid for r in recs)  # a permutation
    e1 = _uids(a)
    assert e1 != e0a  # the next epoch has another order
    assert [u for bt in e0a for u in bt] == [f"f:{i}" for i in np.random.default_rng([1, 0]).permutation(10)]


def test_resume_mid_epoch_gives_same_order(tmp_path):
    recs = _records(11)
    ref = make_dataloader(recs, batch_size=3, shuffle=True, seed=7)
    full = _uids(ref) + _uids(ref)  # two epochs
    run = make_dataloader(recs, batch_size=3, shuffle=True, seed=7)
    it = iter(run)
    seen = [[r.uid for r in next(it)] for _ in range(2)]
    assert _position(run) == (0, 6)
    # through the checkpoint's JSON trainer state, as the trainer saves it
    save_trainer_state(tmp_path, {"step": 2, "dataloader": run.state_dict()})
    resumed = make_dataloader(recs, batch_size=3, shuffle=True, seed=7)
    resumed.load_state_dict(load_trainer_state(tmp_path)["dataloader"])
    rest = _uids(resumed) + _uids(resumed)
    assert seen + rest == full


def test_resume_at_epoch_end_starts_next_epoch():
    recs = _records(4)
    ref = make_dataloader(recs, batch_size=2, shuffle=True, seed=3)
    e0, e1 = _uids(ref), _uids(ref)
    run = make_dataloader(recs, batch_size=2, shuffle=True, seed=3)
    it = iter(run)
    next(it), next(it)  # the whole epoch 0 handed out, iterator not yet exhausted
    state = run.state_dict()
    assert _position(run) == (0, 4)
    resumed = make_dataloader(recs, batch_size=2, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    assert _uids(resumed) == e1 and e1 != e0
    assert resumed.sampler.epoch == 1


def test_state_mismatch_and_bad_args():
    dl = make_dataloader(_records(6), batch_size=2, shuffle=True, seed=0)
    next(iter(dl))
    with pytest.raises(ValueError, match="for 6 records, this config has 5"):
        other = make_dataloader(_records(5), batch_size=2, shuffle=True, seed=0)
        other.load_state_dict(dl.state_dict())
        next(iter(other))
    with pytest.raises(ValueError, match="seed=0"):
        other = make_dataloader(_records(6), batch_size=2, shuffle=True, seed=1)
        other.load_state_dict(dl.state_dict())
        next(iter(other))
    with pytest.raises(ValueError, match="empty dataset"):
        EpochSampler(0)
    with pytest.raises(ValueError, match="gives no batch"):
        make_dataloader(_records(3), batch_size=4, drop_last=True)
