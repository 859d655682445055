"""TTRV controls (algorithm.method_kwargs): consensus gate and RESTRAIN-style soft weights, by hand."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.ttrv.controls import Controls, controls_from, prompt_weights, row_weights
from recipes.ttrv.voting import VoteGroup
from verl.config.loader import ConfigError, load_config
from verl.protocol import DataProto

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "recipes" / "ttrv" / "config")
# majority ratios: 1.0, 0.5, 0.25
GROUPS = [VoteGroup("a", [0, 1, 2, 3], ["1"] * 4), VoteGroup("b", [4, 5, 6, 7], ["1", "1", "2", "3"]),
          VoteGroup("c", [8, 9, 10, 11], ["1", "2", "3", "4"])]


def test_gate_and_soft_weights_by_hand():
    assert not Controls().active
    assert prompt_weights(GROUPS, Controls(gate_min=0.3, gate_max=0.9)) == [0.0, 1.0, 0.0]
    # sigmoid((m - 0.5) / 0.25): m = 1 -> 1/(1+e^-2) = 0.880797, m = .5 -> .5, m = .25 -> 1/(1+e) = 0.268941
    soft = prompt_weights(GROUPS, Controls(soft_kappa=0.5, soft_tau=0.25))
    np.testing.assert_allclose(soft, [1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.e)], rtol=1e-9)
    np.testing.assert_allclose(row_weights(12, GROUPS, [0.0, 1.0, 0.5]), [0] * 4 + [1] * 4 + [0.5] * 4)


def test_controls_checked_at_start_up():
    assert controls_from({"gate_min": 0.2}) == Controls(gate_min=0.2)
    with pytest.raises(ConfigError, match="algorithm.method_kwargs.gate is not a TTRV control"):
        load_config("ttrv_cpu_tiny", ["++algorithm.method_kwargs.gate=0.5"], config_dir=CONFIG_DIR)
    with pytest.raises(ConfigError, match="gate_min <= gate_max"):
        load_config("ttrv_cpu_tiny", ["++algorithm.method_kwargs.gate_min=0.9", "++algorithm.method_kwargs.gate_max=0.5"],
                    config_dir=CONFIG_DIR)


def test_method_reports_gated_fraction_and_weights():
    from recipes.ttrv.method import TTRVMethod

    cfg = load_config("ttrv_cpu_tiny", ["actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.n_votes=4",
                                        "++algorithm.method_kwargs.gate_min=0.3"], config_dir=CONFIG_DIR)
    m = TTRVMethod(cfg)
    texts = {"a": ["1"] * 4, "c": ["1", "2", "3", "4"]}
    data = DataProto.from_dict(tensors={"response_mask": torch.ones(8, 2)},
                               non_tensors={"uid": [u for u, ts in texts.items() for _ in ts],
                                            "response_text": [t for ts in texts.values() for t in ts]})
    scored = m.score(data)
    np.testing.assert_allclose(scored.advantage_weights, [1] * 4 + [0] * 4)
    out = m.metrics(data, {})
    assert out["train/gated_frac"] == 0.5 and out["train/advantage_weight"] == 0.5
