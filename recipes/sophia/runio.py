"""Run-folder I/O of the SOPHIA recipe: append-only JSONL stores that resume per item, and cache stamps.

A :class:`JsonlStore` is written one line per finished item (flushed and fsync'ed), so a killed stage
loses at most the items it was working on. Reading tolerates a truncated last line (a write cut by the
kill): it is dropped and the file rewritten without it before new lines are appended.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class JsonlStore:
    """JSONL rows keyed by ``row[key]``; ``done`` is the set of keys already written."""

    def __init__(self, path: str | Path, key: str = "key"):
        self.path, self.key = Path(path), key
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            self.rows = self._read_and_repair()
        self.done: set[str] = {str(r[key]) for r in self.rows}

    def _read_and_repair(self) -> list[dict[str, Any]]:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        rows, dropped = [], 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or self.key not in row:
                    raise ValueError(f"no {self.key!r}")
            except (json.JSONDecodeError, ValueError) as e:
                if i >= len(lines) - 2:  # the last (possibly unterminated) line: a write cut by a kill
                    dropped += 1
                    continue
                raise ValueError(f"{self.path}:{i + 1}: corrupt row ({e})") from None
            rows.append(row)
        if dropped or (lines and lines[-1].strip()):
            logger.warning("%s: dropping a truncated last line; rewriting %d complete rows", self.path, len(rows))
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, self.path)
        return rows

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append finished rows durably (flush + fsync)."""
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        self.done.update(str(r[self.key]) for r in rows)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file (no repair)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic JSON write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def stamp_is_fresh(folder: str | Path, stamp: dict[str, Any], name: str = "stamp.json") -> bool:
    """Whether ``folder/name`` exists and equals ``stamp`` (JSON round trip)."""
    p = Path(folder) / name
    return p.is_file() and json.loads(p.read_text()) == json.loads(json.dumps(stamp))


def write_stamp(folder: str | Path, stamp: dict[str, Any], name: str = "stamp.json") -> Path:
    return write_json(Path(folder) / name, stamp)


def up_to_date_or_cleared(out: Path, stamp: dict[str, Any], what: str) -> bool:
    """True when ``out`` carries ``stamp`` (nothing to do); else deletes ``out`` for a fresh build."""
    if stamp_is_fresh(out, stamp):
        logger.info("%s in %s is up to date; nothing to do", what, out)
        return True
    if out.exists():
        shutil.rmtree(out)
    return False


def run_pretrain_cli(parse_args: Any, pretrain: Any, argv: list[str] | None = None) -> Path:
    """``main`` of a pretraining script: INFO logging, ``--threads`` torch CPU threads, then ``pretrain(args)``."""
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    return pretrain(a)
