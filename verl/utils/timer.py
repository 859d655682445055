"""Wall-clock timing of named phases, recorded as ``timing_s/<name>`` metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

TIMING_PREFIX = "timing_s/"


class Timer:
    """Context manager measuring elapsed seconds with ``time.perf_counter``.

    If ``metrics`` is given, ``timing_s/<name>`` is added to it on exit (accumulated when the same
    phase is timed more than once in a step).
    """

    def __init__(self, name: str = "", metrics: MutableMapping[str, float] | None = None) -> None:
        self.name = name
        self.metrics = metrics
        self.start: float | None = None
        self.elapsed: float = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.start is not None
        self.elapsed = time.perf_counter() - self.start
        if self.metrics is not None:
            if not self.name:
                raise ValueError("Timer: a name is required to record into a metrics dict")
            key = TIMING_PREFIX + self.name
            self.metrics[key] = self.metrics.get(key, 0.0) + self.elapsed


@contextmanager
def timed(name: str, metrics: MutableMapping[str, float]) -> Iterator[Timer]:
    """Time the enclosed block and add its seconds to ``metrics['timing_s/<name>']``.

    The time is recorded even if the block raises.
    """
    with Timer(name, metrics) as t:
        yield t
