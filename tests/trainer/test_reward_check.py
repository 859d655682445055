"""The generic probe: which advantage estimators cancel per-group constant reward terms."""

import pytest

from verl.config.schema import AlgorithmConfig
from verl.trainer.reward_check import cancels_group_constants


@pytest.mark.parametrize("name,norm,cancels", [
    ("grpo", True, True), ("grpo", False, True), ("drgrpo", True, True),
    ("grpo_batch", True, True),   # per-group centering; the batch std only rescales
    ("batch_norm", True, False),
])
def test_estimator_probe(name, norm, cancels):
    assert cancels_group_constants(AlgorithmConfig(adv_estimator=name, norm_adv_by_std_in_grpo=norm)) is cancels
