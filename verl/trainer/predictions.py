"""Per-item prediction files of a run (no labels): what the model answered, item by item.

``val_predictions_step<N>.jsonl`` is written at every validation: one row per validation item with
``id``, ``uid``, ``data_source``, ``answer`` (greedy) and ``votes`` (the histogram of the extracted
answers of the ``val_sample_n`` sampled responses, most frequent first; ``{}`` when sampled
validation is off).  Comparing the step-0 file with a later one shows which items changed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from verl.protocol import DataProto


def validation_rows(greedy: DataProto, sampled: DataProto | None) -> list[dict]:
    """One row per item of ``greedy`` (in its order) with the greedy answer and the sampled vote histogram."""
    votes: dict[str, Counter] = {}
    if sampled is not None:
        for uid, ans in zip(sampled.non_tensor_batch["uid"], sampled.non_tensor_batch["answer"]):
            votes.setdefault(str(uid), Counter())[str(ans)] += 1
    rows: list[dict] = []
    seen: set[str] = set()
    nt = greedy.non_tensor_batch
    for uid, src, ans in zip(nt["uid"], nt["data_source"], nt["answer"]):
        uid = str(uid)
        if uid in seen:
            continue
        seen.add(uid)
        rows.append({"id": uid.rsplit(":", 1)[-1], "uid": uid, "data_source": str(src),  # id as Record.record_id
                     "answer": str(ans), "votes": dict(votes.get(uid, Counter()).most_common())})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as JSON lines atomically (a kill never leaves half a file); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path
