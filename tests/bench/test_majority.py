"""The majority-vote reward the TRL benchmark (bench/vs_trl) hands to GRPOTrainer."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "vs_trl" / "majority.py"
_spec = importlib.util.spec_from_file_location("bench_vs_trl_majority", _PATH)
majority = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(majority)


def test_groups_by_prompt_and_rewards_the_majority():
    prompts = ["p1", "p2", "p1", "p2", "p1", "p2"]
    completions = ["3", "7", "3", "1", "5", "7"]
    assert majority.majority_vote_rewards(prompts, completions) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]


def test_chat_messages_and_invalid_answers():
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which digit?"}]}]
    other = [{"role": "user", "content": "Which digit, again?"}]
    done = [{"role": "assistant", "content": "4"}]
    empty = [{"role": "assistant", "content": ""}]
    rewards = majority.majority_vote_rewards([user, user, user, other], [done, done, empty, done],
                                             invalid_penalty=-0.5)
    assert rewards == [1.0, 1.0, -0.5, 1.0]


def test_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        majority.majority_vote_rewards(["a", "b"], ["1"])
