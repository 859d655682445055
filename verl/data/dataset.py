"""Batching of records with a resumable data order: :class:`RecordLoader` over the records.

Batches are lists of :class:`Record` (images stay paths / bytes; pixels are built on the workers).
Epoch ``e`` visits the records in the permutation seeded by ``(seed, e)``. The sampler's position
(epoch, records handed out in it) is the loader's ``state_dict``, saved with a checkpoint and
restored, so a resumed run sees exactly the batches it would have seen. Batches are drawn in the
calling process only when taken, so the saved position is exact. Needs only torch and numpy (the bare
GPU machine of ``scripts/gpu_check.sh`` has nothing more).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

from verl.data.formats import Record


class RLDataset(Dataset):
    """A list of records as a torch ``Dataset`` (an item is a :class:`Record`)."""

    def __init__(self, records: Sequence[Record]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]


class EpochSampler(Sampler[int]):
    """Indices of epoch ``epoch`` (the ``(seed, epoch)`` permutation, or 0..n-1 without shuffling) from
    ``offset`` on; an iteration that starts at the end of an epoch starts the next one.

    Stateful (``state_dict`` / ``load_state_dict``), so the loader restores its exact position.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0) -> None:
        if n < 1:
            raise ValueError("cannot batch an empty dataset (0 records)")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch = 0
        self.offset = 0

    def __len__(self) -> int:
        return self.n

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of one epoch, in order."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        if self.offset >= self.n:
            self.epoch, self.offset = self.epoch + 1, 0
        order = self.epoch_order(self.epoch)
        while self.offset < self.n:
            self.offset += 1
            yield int(order[self.offset - 1])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "n": self.n, "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; the data settings must match (a different data set cannot resume)."""
        if int(state["n"]) != self.n:
            raise ValueError(f"the checkpoint's data-loader state is for {state['n']} records, this config has {self.n}: "
                             "a changed data set cannot resume it (choose another trainer.experiment_name or "
                             "delete that checkpoint folder)")
        for key in ("seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(f"data-loader state has {key}={state[key]!r} but the loader has "
                                 f"{getattr(self, key)!r}; resume with the same data settings")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


class RecordLoader:
    """``list[Record]`` batches of ``batch_size`` in :class:`EpochSampler` order (the last one shorter
    unless ``drop_last``); ``loader.sampler.epoch`` is the epoch of the batch last handed out."""

    def __init__(self, records: Sequence[Record], batch_size: int, sampler: EpochSampler, drop_last: bool) -> None:
        self.dataset = RLDataset(records)
        self.batch_size, self.sampler, self.drop_last = batch_size, sampler, drop_last

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[list[Record]]:
        batch: list[Record] = []
        for i in self.sampler:
            batch.append(self.dataset[i])
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])


def make_dataloader(records: Sequence[Record], batch_size: int, shuffle: bool = True, seed: int = 0,
                    drop_last: bool = False) -> RecordLoader:
    """A :class:`RecordLoader` over ``records`` in the ``(seed, epoch)`` order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last and len(records) < batch_size:
        raise ValueError(f"drop_last with {len(records)} records and batch_size {batch_size} gives no batch")
    return RecordLoader(records, batch_size, EpochSampler(len(records), shuffle=shuffle, seed=seed), drop_last)
