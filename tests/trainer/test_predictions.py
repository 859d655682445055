"""Validation prediction rows: greedy answer and vote histogram per item, in item order."""

import json

import numpy as np

from verl.protocol import DataProto
from verl.trainer.predictions import validation_rows, write_jsonl


def _batch(uids, answers, src="digits"):
    arr = lambda xs: np.array(xs, dtype=object)  # noqa: E731
    return DataProto.from_dict(non_tensors={"uid": arr(uids), "data_source": arr([src] * len(uids)),
                                            "answer": arr(answers)})


def test_rows_hold_greedy_answer_and_votes(tmp_path):
    greedy = _batch(["f:1", "f:2"], ["7", "[invalid]"])
    sampled = _batch(["f:1", "f:1", "f:1", "f:2", "f:2", "f:2"], ["7", "1", "7", "3", "[invalid]", "3"])
    rows = validation_rows(greedy, sampled)
    assert rows == [
        {"id": "1", "uid": "f:1", "data_source": "digits", "answer": "7", "votes": {"7": 2, "1": 1}},
        {"id": "2", "uid": "f:2", "data_source": "digits", "answer": "[invalid]", "votes": {"3": 2, "[invalid]": 1}},
    ]
    assert list(rows[0]["votes"]) == ["7", "1"]  # most frequent first
    assert validation_rows(greedy, None)[1]["votes"] == {}
    path = write_jsonl(tmp_path / "run" / "val_predictions_step0.jsonl", rows)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows
