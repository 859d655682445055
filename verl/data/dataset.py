"""Batching of records with a resumable data order.

Batches are lists of :class:`Record` (images stay paths / bytes; pixels are built on the workers).
The sampler's position (``epoch``, ``offset`` = samples already handed out in that epoch) is saved
with a checkpoint and restored, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from verl.data.formats import Record

COLLATE_KEYS = ("uid", "index", "data_source", "prompt", "images", "ground_truth", "options")


class RLDataset(Dataset):
    """A list of records as a torch ``Dataset`` (an item is a :class:`Record`)."""

    def __init__(self, records: Sequence[Record]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]


class StatefulBatchSampler(Sampler[list[int]]):
    """Yields index batches; epoch ``e`` uses the permutation seeded by ``(seed, e)`` (or 0..n-1 if not shuffling).

    Iterating yields the rest of the current epoch from ``offset``; when the epoch is exhausted (also when
    a restored state sits at its end) the next iteration starts the next epoch.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n < 1:
            raise ValueError("cannot batch an empty dataset (0 records)")
        if drop_last and n < batch_size:
            raise ValueError(f"drop_last with {n} records and batch_size {batch_size} gives no batch")
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch = 0
        self.offset = 0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of one epoch, in order (before batching)."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def _epoch_end(self) -> int:
        return len(self) * self.batch_size if self.drop_last else self.n

    def __iter__(self) -> Iterator[list[int]]:
        if self.offset >= self._epoch_end():
            self.epoch, self.offset = self.epoch + 1, 0
        order = self.epoch_order(self.epoch)
        end = self._epoch_end()
        while self.offset < end:
            batch = order[self.offset:min(self.offset + self.batch_size, end)].tolist()
            self.offset += len(batch)
            yield batch
        self.epoch, self.offset = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch`` (no-op if already in it)."""
        if epoch != self.epoch:
            self.epoch, self.offset = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "n": self.n, "batch_size": self.batch_size,
                "seed": self.seed, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; the dataset size must match (a different data set cannot resume)."""
        if int(state.get("n", self.n)) != self.n:
            raise ValueError(f"data-loader state is for {state['n']} records, but the dataset has {self.n}")
        for key in ("seed", "shuffle", "batch_size", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"data-loader state has {key}={state[key]!r} but the loader has "
                                 f"{getattr(self, key)!r}; resume with the same data settings")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def _as_list(batch: list[Record]) -> list[Record]:
    return list(batch)


class StatefulDataLoader(DataLoader):
    """``DataLoader`` over records (batch = ``list[Record]``) whose position can be saved and restored."""

    batch_sampler: StatefulBatchSampler

    def state_dict(self) -> dict[str, Any]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch


def make_dataloader(records: Sequence[Record], batch_size: int, shuffle: bool = True, seed: int = 0,
                    drop_last: bool = False) -> StatefulDataLoader:
    """A single-process loader yielding ``list[Record]`` batches; see :class:`StatefulBatchSampler`."""
    dataset = RLDataset(records)
    sampler = StatefulBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    # num_workers=0: the sampler advances only when a batch is taken, so its state is exact
    return StatefulDataLoader(dataset, batch_sampler=sampler, collate_fn=_as_list, num_workers=0)
