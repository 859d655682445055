"""Online (prequential) protocol: stream planning (pure), and the driver end to end on the local backend
(every item answered once before any update used it, episodic resets restore the base, exact resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipes.ttrv import online as O
from verl.config.loader import ConfigError
from verl.data.formats import Record


def rec(i, src):
    return Record(uid=f"f:{i}", index=i, data_source=src, prompt=[{"role": "user", "content": "?"}])


def test_stream_episodes_and_chunks():
    recs = [rec(i, s) for i, s in enumerate("aaabbbba")]
    assert [r.uid for r in O.stream_order(recs, 2)] == ["f:0", "f:1", "f:3", "f:4"]
    srcs = [r.data_source for r in recs]
    assert O.episodes(srcs, "continual", 0) == [0] * 8
    assert O.episodes(srcs, "episodic", 0) == [0, 0, 0, 1, 1, 1, 1, 2]
    assert O.episodes(srcs, "episodic", 2) == [0, 0, 1, 2, 2, 3, 3, 4]
    assert O.chunks([0, 0, 0, 1, 1, 1, 1, 2], 2) == [[0, 1], [2], [3, 4], [5, 6], [7]]


def test_update_batches_lead_with_the_new_items():
    rng = np.random.default_rng(0)
    b = O.update_batches([6, 7], list(range(8)), batch_size=4, steps=3, rng=rng)
    assert b[0][:2] == [6, 7] and len(b[0]) == 4 and len(set(b[0])) == 4
    assert all(len(x) == 4 and set(x) <= set(range(8)) for x in b[1:])
    assert O.update_batches([0, 1], [0, 1], 4, 1, rng) == [[0, 1]]  # nothing older to draw yet


def test_prequential_metrics_read_labels_only_here():
    rows = [{"uid": "f:0", "data_source": "a", "answer": "1", "base_answer": "2"},
            {"uid": "f:1", "data_source": "b", "answer": "3", "base_answer": "3"}]
    m = O.prequential_metrics(rows, {"f:0": "1", "f:1": "3"})
    assert m["online/prequential_acc"] == 1.0 and m["online/base_acc"] == 0.5
    assert m["online/a/base_acc"] == 0.0 and m["online/b/prequential_acc"] == 1.0


def test_preset_loads_and_bad_keys_are_named():
    cfg = O.load_online_config("protocol_e_online", ["online.mode=episodic"])
    assert isinstance(cfg, O.OnlineRLConfig) and cfg.online.mode == "episodic" and not cfg.data.shuffle
    with pytest.raises(ConfigError, match="online.k"):
        O.load_online_config("protocol_e_online", ["online.k=9"])
    with pytest.raises(ConfigError, match="online.mode"):
        O.load_online_config("protocol_e_online", ["online.mode=sometimes"])
    with pytest.raises(ConfigError, match="online.kk"):
        O.load_online_config("protocol_e_online", ["online.kk=1"])


def _cfg(model, data, tmp, *extra):
    files = f"[{data / 'test_noise_mc.json'},{data / 'test_blur_mc.json'}]"  # the random model's votes differ here
    return O.load_online_config("protocol_e_online", [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
        "data.train_batch_size=4", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "online.k=2", "online.window=4",
        "online.items_per_source=4", "online.steps_per_update=1", "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.actor.skip_zero_adv_groups=false",
        f"trainer.default_local_dir={tmp / 'ckpt'}", f"trainer.log_dir={tmp / 'logs'}", "trainer.logger=[jsonl]",
        *extra])


def _run(cfg, chunks=None):
    from verl.data.formats import load_records
    from verl.logging.tracker import Tracker

    stream = O.stream_order(load_records(list(cfg.data.train_files)), cfg.online.items_per_source)
    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, ["jsonl"], log_dir=cfg.trainer.log_dir,
                      config=cfg)
    driver = O.OnlineRun(cfg, stream, tracker)
    if chunks is not None:
        driver.chunks = driver.chunks[:chunks]  # "killed" after these chunks (the last checkpoint is kept)
    try:
        summary = driver.run()
        weights = driver.trainer.wg.full_state_dict()[0]
    finally:
        driver.trainer.close()
        tracker.finish()
    rows = [json.loads(x) for x in (tracker.run_dir / "predictions.jsonl").read_text().splitlines()]
    return summary, rows, weights


@pytest.mark.slow
def test_episodic_run_predictions_and_exact_resume(tiny_vlm_path, digits_dir, tmp_path):
    model = tiny_vlm_path("qwen2_5_vl")
    summary, rows, weights = _run(_cfg(model, digits_dir, tmp_path / "full", "online.mode=episodic"))
    assert [r["position"] for r in rows] == list(range(8))  # every item exactly once, in arrival order
    assert [r["data_source"] for r in rows] == ["digits_test_noise"] * 4 + ["digits_test_blur"] * 4
    assert all(r["answered_after_updates"] < r["first_trained_in_update"] for r in rows)
    assert [r["answered_after_updates"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["episode"] for r in rows] == [0] * 4 + [1] * 4
    # each episode starts from the base: its first chunk is answered exactly as the base answered it
    assert all(r["answer"] == r["base_answer"] for r in rows if r["position"] in (0, 1, 4, 5))
    assert 0.0 <= summary["online/prequential_acc"] <= 1.0 and "online/base_acc" in summary
    from verl.models.load import load_vlm

    base = load_vlm(model, device="cpu")[0].state_dict()
    assert any(not np.allclose(weights[k], base[k].float().numpy()) for k in weights)  # the updates trained it

    cut = _cfg(model, digits_dir, tmp_path / "cut", "online.mode=episodic")
    _run(cut, chunks=3)  # stops inside the second episode
    _, resumed_rows, resumed_weights = _run(cut)
    log = tmp_path / "cut" / "logs" / cut.trainer.project_name / cut.trainer.experiment_name / "metrics.jsonl"
    updates = [json.loads(x)["online/updates"] for x in log.read_text().splitlines() if "online/updates" in x]
    assert updates == [1.0, 2.0, 3.0, 4.0]  # the second run resumed after update 3 instead of starting over
    assert resumed_rows == rows
    assert all(np.array_equal(weights[k], resumed_weights[k]) for k in weights)
    # a changed stream cannot resume
    with pytest.raises(ValueError, match="for 8 records, this config has 4: a changed data set cannot resume"):
        _run(_cfg(model, digits_dir, tmp_path / "cut", "online.mode=episodic", "online.items_per_source=2"))


def test_preset_streams_every_source(tiny_vlm_path, digits_dir):
    """The preset's stream holds items_per_source items of each file (no global max_samples cut to one file)."""
    from verl.trainer.main import load_data

    files = [digits_dir / f"test_{s}_open.json" for s in ("noise", "blur", "rotate")]
    cfg = O.load_online_config("protocol_e_online", [f"data.train_files=[{','.join(map(str, files))}]",
                                                     f"data.val_files=[{files[0]}]",
                                                     f"actor_rollout_ref.model.path={tiny_vlm_path()}"])
    records, _ = load_data(cfg)
    stream = O.stream_order(records, cfg.online.items_per_source)
    per_source = {s: sum(r.data_source == s for r in stream) for s in {r.data_source for r in stream}}
    assert len(per_source) == 3 and set(per_source.values()) == {cfg.online.items_per_source}, per_source
