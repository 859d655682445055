"""The method interface of the controller loop: loading by name / import path, score checks, and a NaN
custom reward stopping a train step with the function's name and the prompt uid (no workers needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from verl.config.loader import ConfigError, load_config
from verl.data.formats import Record
from verl.protocol import DataProto
from verl.rewards.registry import RewardError
from verl.trainer.guards import GroupStats
from verl.trainer.method import GRPOMethod, checked_scores, first_n_per_group, method_class

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config")
OPTIONS = {"A": "cat", "B": "dog"}


def rows(uids: list[str], texts: list[str] | None = None) -> DataProto:
    texts = texts or ["A"] * len(uids)
    return DataProto.from_dict(
        tensors={"response_mask": torch.ones(len(uids), 3, dtype=torch.long)},
        non_tensors={"uid": uids, "response_text": texts, "options": [OPTIONS] * len(uids)})


def test_method_class_by_name_and_import_path():
    assert method_class("grpo") is GRPOMethod
    from recipes.ttrv.method import TTRVMethod

    assert method_class("recipes.ttrv.method:TTRVMethod") is TTRVMethod
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        method_class("nope")
    with pytest.raises(KeyError, match="cannot load method 'verl.nope:X'"):
        method_class("verl.nope:X")
    with pytest.raises(KeyError, match=r"lacks \['score', 'metrics', 'train_rows'\]"):
        method_class("verl.protocol:DataProtoItem")
    with pytest.raises(ConfigError, match="algorithm.method='nope' is not registered"):
        load_config(overrides=["algorithm.method=nope"])


def test_checked_scores():
    data = rows(["p", "p", "q"])
    assert checked_scores([1, 2, 3], data, "m").dtype == np.float32
    with pytest.raises(ValueError, match=r"method 'm': score returned shape \(2,\) for 3 rows"):
        checked_scores([1, 2], data, "m")
    with pytest.raises(ValueError, match="method 'm': non-finite score nan for prompt uid 'q'"):
        checked_scores([1, 2, float("nan")], data, "m")
    with pytest.raises(ValueError, match="method 'm': negative advantage weight -1.0 for prompt uid 'p'"):
        checked_scores([1, -1, 0], data, "m", "advantage weight")


def test_grpo_method_trains_the_first_n_of_each_prompt(tmp_path):
    f = tmp_path / "is_a.py"
    f.write_text("def score(responses, *, hit, **kw):\n    return [hit * (r == 'A') for r in responses]\n")
    cfg = load_config(overrides=["actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.n_votes=3",
                                 f"reward.custom_reward_function={f}:score", "+reward.kwargs.hit=2.0"])
    m = GRPOMethod(cfg)
    data = rows(["p", "q", "p", "q", "p", "q"], ["A", "B", "A", "B", "B", "B"])
    np.testing.assert_array_equal(m.train_rows(data, step=1), [0, 1, 2, 3])
    scored = m.score(data)
    np.testing.assert_allclose(scored.values, [2, 0, 2, 0, 0, 0], rtol=1e-6)
    # the guard's statistics: p votes A, A, B; q votes B, B, B
    assert scored.groups == [GroupStats("A", 2 / 3, 0.0), GroupStats("B", 1.0, 0.0)]
    assert m.metrics(data, {}) == {}
    with pytest.raises(ConfigError, match="reward.name='ttrv': algorithm.method=grpo has no named rewards"):
        load_config(overrides=["reward.name=ttrv"])
    np.testing.assert_array_equal(first_n_per_group(data, 1), [0, 1])


def test_nan_custom_reward_stops_the_step_naming_the_function(tmp_path):
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    f = tmp_path / "nan_reward.py"
    f.write_text("def score(responses, **kw):\n    return [float('nan')] * len(responses)\n")
    cfg = load_config("ttrv_cpu_tiny", [f"reward.custom_reward_function={f}:score", "reward.name=", "reward.kwargs={}",
                                        "data.train_batch_size=1",
                                        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
                                        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
                                        f"trainer.log_dir={tmp_path / 'logs'}", "trainer.logger=[jsonl]"],
                      config_dir=CONFIG_DIR)
    rec = Record(uid="f:7", index=7, data_source="d", prompt=[{"role": "user", "content": "<image> x?"}],
                 images=["x.png"], ground_truth="A", options=OPTIONS)
    tracker = Tracker("p", "e", ["jsonl"], log_dir=str(tmp_path / "logs"), config=cfg)

    class FakeWorkers:
        def generate_sequences(self, prompts: DataProto) -> DataProto:
            n = prompts.meta_info["n"]
            assert "ground_truth" not in prompts.non_tensor_batch
            return DataProto.from_dict(
                tensors={"response_mask": torch.ones(n, 2, dtype=torch.long)},
                non_tensors={k: [v[0]] * n for k, v in prompts.non_tensor_batch.items()} | {
                    "response_text": ["A"] * n})

    trainer = Trainer(cfg, [rec], [], tracker)
    trainer.wg = FakeWorkers()
    try:
        with pytest.raises(RewardError, match=rf"group reward '{f}:score' for prompt uid 'f:7' returned a non-finite"):
            trainer.train_step([rec])
    finally:
        tracker.finish()


def test_prompts_carry_metadata_but_no_label():
    from verl.trainer.fit import records_to_prompts

    rec = Record(uid="f:3", index=3, data_source="digits", prompt=[{"role": "user", "content": "<image> which?"}],
                 images=["x.png"], ground_truth="A", options={"A": "5", "B": "7"},
                 extra={"digit": "5", "shift": "noise", "answer": "A"})
    nt = records_to_prompts([rec]).non_tensor_batch
    assert nt["extra"][0] == {"shift": "noise"} and nt["options"][0] == {"A": "5", "B": "7"}
    assert nt["data_source"][0] == "digits" and nt["uid"][0] == "f:3"
    assert "ground_truth" not in nt
