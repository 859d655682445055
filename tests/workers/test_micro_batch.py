"""token_micro_batches: a shared prompt counted once, greedy by prompt, hand-computed splits."""

from __future__ import annotations

import pytest

from verl.workers.micro_batch import packed_tokens, token_micro_batches


def test_packed_tokens_counts_a_shared_prompt_once():
    assert packed_tokens({}, 10, 3) == 0
    assert packed_tokens({"a": 4}, 100, 8) == 100 + 4 * 8
    assert packed_tokens({"a": 4, "b": 2}, 100, 8) == 2 * (100 + 4 * 8)  # padded to the larger group


def test_groups_stay_together_within_the_budget():
    keys = ["a"] * 4 + ["b"] * 4
    plen, rlen = [100] * 8, [8] * 8
    # one group = 100 + 4 * 8 = 132 tokens; two groups = 264
    assert token_micro_batches(range(8), keys, plen, rlen, 264) == [list(range(8))]
    assert token_micro_batches(range(8), keys, plen, rlen, 200) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # a group larger than the budget is split (its prompt re-read per part): 100 + 2*8 = 116 <= 120
    assert token_micro_batches(range(8), keys, plen, rlen, 120) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # a row alone over the budget still gets a micro-batch
    assert token_micro_batches([0, 1], keys, plen, rlen, 50) == [[0], [1]]


def test_per_sample_cost_and_sample_cap_and_order():
    keys = ["a", "b", "a", "b"]
    plen, rlen = [10, 20, 10, 20], [2, 5, 3, 5]
    # shared: rows taken prompt by prompt in order of first appearance
    assert token_micro_batches(range(4), keys, plen, rlen, 1000) == [[0, 2, 1, 3]]
    assert token_micro_batches(range(4), keys, plen, rlen, 1000, max_samples=3) == [[0, 2, 1], [3]]
    # per sample: every row pays its prompt: 2 rows x (20 + 5) = 50
    assert token_micro_batches(range(4), keys, plen, rlen, 50, share_prompt=False) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="max_tokens"):
        token_micro_batches(range(4), keys, plen, rlen, 0)
