"""On-disk response cache for the off-policy reasoner (SQLite, WAL mode, one commit per response).

Keyed by a SHA-256 of (model, messages, sampling params, sample index), so a crashed or restarted run
never pays twice for a request it already got an answer to; a killed run loses at most the requests
that were in flight. Only successful responses are stored (failures are retried on the next run).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    reasoning TEXT,
    completion_tokens INTEGER,
    finish_reason TEXT,
    created REAL NOT NULL
)
"""


class CachedResponse(NamedTuple):
    text: str
    reasoning: str | None
    completion_tokens: int | None
    finish_reason: str | None


def request_key(model: str, messages: Any, params: dict[str, Any], sample_index: int) -> str:
    """Stable hash of one request (canonical JSON: sorted keys, no whitespace)."""
    payload = {"model": model, "messages": messages, "params": params, "sample_index": int(sample_index)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """SQLite-backed key -> response store; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"response cache {self.path}: cannot open as SQLite ({e})") from e

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT text, reasoning, completion_tokens, finish_reason FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return CachedResponse(*row) if row else None

    def put(self, key: str, resp: CachedResponse) -> None:
        """Store one response and commit at once (durable across a crash of this process)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (key, resp.text, resp.reasoning, resp.completion_tokens, resp.finish_reason, time.time()),
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
