"""``DataProto``: the batch container passed between the controller and the workers.

A ``DataProto`` holds three things:

- ``batch``: ``dict[str, torch.Tensor]``, every tensor with the same first dimension (the rows);
- ``non_tensor_batch``: ``dict[str, np.ndarray]``, per-row Python objects (strings, bytes, chat messages,
  lists) in numpy arrays whose first dimension is the same row count; lists given to
  :meth:`DataProto.from_dict` become 1-D ``dtype=object`` arrays;
- ``meta_info``: a plain dict of batch-level values (sampling settings, metrics), not split by rows.

Conventions:

- ``data[i]`` (an ``int``) returns a :class:`DataProtoItem` (one row: tensors without the row dimension,
  the raw objects, the shared ``meta_info``); ``for item in data`` iterates over such items. Slices,
  integer lists / arrays / tensors and boolean masks return a ``DataProto``.
- Slices (and therefore :meth:`chunk` / :meth:`split` / :meth:`unpad`) are views that share storage with
  the source, like numpy. Pickling (Ray) compacts views first, so a chunk never ships its parent's storage.
- :meth:`union`, :meth:`to` and :meth:`rename` modify the object in place and return it; every other
  method returns a new object. ``meta_info`` is copied shallowly into new objects.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["DataProto", "DataProtoItem", "object_array"]

_Index = int | slice | Sequence[int] | np.ndarray | torch.Tensor


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (equal-length inner lists stay lists, not a 2-D array)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _as_object_array(key: str, values: Any) -> np.ndarray:
    """Lists / tuples become 1-D object arrays (elements kept as-is, even lists); arrays are kept."""
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise ValueError(f"non_tensor_batch[{key!r}] is a 0-d array; per-row values need a first dimension")
        return values
    if isinstance(values, list | tuple):
        return object_array(values)
    raise TypeError(f"non_tensor_batch[{key!r}] must be a numpy array or a list, got {type(values).__name__}")


def _values_equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_arr, b_arr = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
        return a_arr.shape == b_arr.shape and all(_values_equal(x, y) for x, y in zip(a_arr.ravel(), b_arr.ravel()))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A tensor owning exactly its own bytes (views of larger storages are cloned)."""
    if t.storage_offset() == 0 and t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


@dataclass
class DataProtoItem:
    """One row of a :class:`DataProto` (``data[i]``)."""

    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, Any]
    meta_info: dict[str, Any]


@dataclass(eq=False)
class DataProto:
    """Tensors, per-row objects and batch-level meta information sharing one row dimension."""

    batch: dict[str, torch.Tensor] = field(default_factory=dict)
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_consistency()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls,
        tensors: dict[str, torch.Tensor] | None = None,
        non_tensors: dict[str, Any] | None = None,
        meta_info: dict[str, Any] | None = None,
    ) -> DataProto:
        """Build from dicts; lists in ``non_tensors`` become object arrays. Unequal lengths raise ``ValueError``."""
        tensors = dict(tensors or {})
        for k, v in tensors.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"DataProto.from_dict: tensors[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
        non = {k: _as_object_array(k, v) for k, v in (non_tensors or {}).items()}
        return cls(batch=tensors, non_tensor_batch=non, meta_info=dict(meta_info or {}))

    def check_consistency(self) -> None:
        """Raise ``TypeError`` / ``ValueError`` naming the first key whose type or row count is wrong."""
        ref_key, ref_len = None, None
        for where, d in (("batch", self.batch), ("non_tensor_batch", self.non_tensor_batch)):
            if not isinstance(d, dict):
                raise TypeError(f"DataProto.{where} must be a dict, got {type(d).__name__}")
            for k, v in d.items():
                kind = torch.Tensor if where == "batch" else np.ndarray
                if not isinstance(v, kind):
                    raise TypeError(f"DataProto.{where}[{k!r}] must be a {kind.__module__}.{kind.__name__}, "
                                    f"got {type(v).__name__}")
                if v.ndim == 0:
                    raise ValueError(f"DataProto.{where}[{k!r}] is 0-dimensional; rows need a first dimension")
                n = int(v.shape[0])
                if ref_len is None:
                    ref_key, ref_len = f"{where}[{k!r}]", n
                elif n != ref_len:
                    raise ValueError(f"DataProto: {where}[{k!r}] has length {n} but {ref_key} has length {ref_len}")
        if not isinstance(self.meta_info, dict):
            raise TypeError(f"DataProto.meta_info must be a dict, got {type(self.meta_info).__name__}")

    # ------------------------------------------------------------------ size and indexing
    def __len__(self) -> int:
        for d in (self.batch, self.non_tensor_batch):
            for v in d.values():
                return int(v.shape[0])
        return 0

    def __repr__(self) -> str:
        tens = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" for k, v in self.batch.items())
        non = ", ".join(f"{k}: {v.dtype}" for k, v in self.non_tensor_batch.items())
        return f"DataProto(len={len(self)}, batch={{{tens}}}, non_tensor_batch={{{non}}}, meta_info={sorted(self.meta_info)})"

    def _take(self, idx: slice | np.ndarray) -> DataProto:
        """Rows by slice (views) or by a 1-D int64 index array (copies)."""
        t_idx = idx if isinstance(idx, slice) else torch.as_tensor(idx, dtype=torch.long)
        batch = {k: v[t_idx.to(v.device) if isinstance(t_idx, torch.Tensor) else t_idx] for k, v in self.batch.items()}
        non = {k: v[idx] for k, v in self.non_tensor_batch.items()}
        return DataProto(batch=batch, non_tensor_batch=non, meta_info=dict(self.meta_info))

    def _row_index(self, item: Any) -> np.ndarray:
        """Normalize a list / array / tensor of ints or a boolean mask to an int64 index array."""
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        arr = np.asarray(item)
        n = len(self)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean index has shape {arr.shape}, expected ({n},)")
            return np.nonzero(arr)[0].astype(np.int64)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise IndexError(f"DataProto index must be 1-D integers or a boolean mask, got {arr.dtype} shape {arr.shape}")
        if arr.min() < -n or arr.max() >= n:
            raise IndexError(f"DataProto index out of range for length {n}: {arr.min()}..{arr.max()}")
        return np.where(arr < 0, arr + n, arr).astype(np.int64)

    def __getitem__(self, item: _Index) -> DataProto | DataProtoItem:
        if isinstance(item, int | np.integer) and not isinstance(item, bool):
            n, i = len(self), int(item)
            if not -n <= i < n:
                raise IndexError(f"DataProto index {i} out of range for length {n}")
            i %= n
            return DataProtoItem(
                batch={k: v[i] for k, v in self.batch.items()},
                non_tensor_batch={k: v[i] for k, v in self.non_tensor_batch.items()},
                meta_info=self.meta_info,
            )
        if isinstance(item, slice):
            return self._take(item)
        if isinstance(item, torch.Tensor) and item.ndim == 0:
            return self[int(item)]
        return self._take(self._row_index(item))

    def __iter__(self) -> Iterator[DataProtoItem]:
        for i in range(len(self)):
            yield self[i]  # type: ignore[misc]

    # ------------------------------------------------------------------ key selection
    @staticmethod
    def _pick(d: dict[str, Any], keys: Sequence[str] | None, what: str) -> list[str]:
        if keys is None:
            return list(d)
        if isinstance(keys, str):
            keys = [keys]
        missing = [k for k in keys if k not in d]
        if missing:
            raise KeyError(f"DataProto.{what} has no key(s) {missing}; available: {sorted(d)}")
        return list(keys)

    def select(
        self,
        batch_keys: Sequence[str] | None = None,
        non_tensor_batch_keys: Sequence[str] | None = None,
        meta_info_keys: Sequence[str] | None = None,
        deepcopy: bool = False,
    ) -> DataProto:
        """A new DataProto with the named keys (``None`` = all keys of that part); shares data unless ``deepcopy``."""
        b = {k: self.batch[k] for k in self._pick(self.batch, batch_keys, "batch")}
        nt = {k: self.non_tensor_batch[k] for k in self._pick(self.non_tensor_batch, non_tensor_batch_keys,
                                                               "non_tensor_batch")}
        m = {k: self.meta_info[k] for k in self._pick(self.meta_info, meta_info_keys, "meta_info")}
        if deepcopy:
            b = {k: v.clone() for k, v in b.items()}
            nt, m = copy.deepcopy(nt), copy.deepcopy(m)
        return DataProto(batch=b, non_tensor_batch=nt, meta_info=m)

    def pop(
        self,
        batch_keys: Sequence[str] | None = None,
        non_tensor_batch_keys: Sequence[str] | None = None,
        meta_info_keys: Sequence[str] | None = None,
        deepcopy: bool = False,
    ) -> DataProto:
        """Remove the named keys from ``self`` and return them as a new DataProto (``None`` = none of that part)."""
        popped = self.select(batch_keys or [], non_tensor_batch_keys or [], meta_info_keys or [], deepcopy=deepcopy)
        for k in popped.batch:
            del self.batch[k]
        for k in popped.non_tensor_batch:
            del self.non_tensor_batch[k]
        for k in popped.meta_info:
            del self.meta_info[k]
        return popped

    def rename(self, old_keys: str | Sequence[str], new_keys: str | Sequence[str]) -> DataProto:
        """Rename keys of ``batch`` or ``non_tensor_batch`` (wherever each old key lives), in place."""
        old = [old_keys] if isinstance(old_keys, str) else list(old_keys)
        new = [new_keys] if isinstance(new_keys, str) else list(new_keys)
        if len(old) != len(new):
            raise ValueError(f"rename: {len(old)} old keys {old} but {len(new)} new keys {new}")
        for o, n in zip(old, new):
            d = self.batch if o in self.batch else self.non_tensor_batch if o in self.non_tensor_batch else None
            if d is None:
                raise KeyError(f"rename: no key {o!r}; available: {sorted([*self.batch, *self.non_tensor_batch])}")
            if n != o and (n in self.batch or n in self.non_tensor_batch):
                raise KeyError(f"rename: target key {n!r} already exists")
            d[n] = d.pop(o)
        return self

    # ------------------------------------------------------------------ combining
    def union(self, other: DataProto) -> DataProto:
        """Merge ``other``'s keys into ``self`` (in place, returns ``self``); shared keys must hold equal values."""
        if (other.batch or other.non_tensor_batch) and (self.batch or self.non_tensor_batch) and len(other) != len(self):
            raise ValueError(f"union: lengths differ ({len(self)} vs {len(other)})")
        for where, mine, theirs in (("batch", self.batch, other.batch),
                                    ("non_tensor_batch", self.non_tensor_batch, other.non_tensor_batch),
                                    ("meta_info", self.meta_info, other.meta_info)):
            for k, v in theirs.items():
                if k in mine and not _values_equal(mine[k], v):
                    raise ValueError(f"union: key {where}[{k!r}] exists in both with different values")
        self.batch.update(other.batch)
        self.non_tensor_batch.update(other.non_tensor_batch)
        self.meta_info.update(other.meta_info)
        self.check_consistency()
        return self

    @staticmethod
    def concat(data: Sequence[DataProto]) -> DataProto:
        """Stack rows of several DataProtos with the same keys; ``meta_info`` is merged, first value wins."""
        if not data:
            raise ValueError("DataProto.concat needs at least one DataProto")
        first = data[0]
        for i, d in enumerate(data[1:], start=1):
            if set(d.batch) != set(first.batch) or set(d.non_tensor_batch) != set(first.non_tensor_batch):
                raise ValueError(
                    f"DataProto.concat: item {i} has keys batch={sorted(d.batch)} non_tensor={sorted(d.non_tensor_batch)}"
                    f" but item 0 has batch={sorted(first.batch)} non_tensor={sorted(first.non_tensor_batch)}")
        batch = {}
        for k in first.batch:
            try:
                batch[k] = torch.cat([d.batch[k] for d in data], dim=0)
            except RuntimeError as e:
                shapes = [tuple(d.batch[k].shape) for d in data]
                raise ValueError(f"DataProto.concat: batch[{k!r}] cannot be stacked, shapes {shapes}") from e
        non = {}
        for k in first.non_tensor_batch:
            try:
                non[k] = np.concatenate([d.non_tensor_batch[k] for d in data], axis=0)
            except ValueError as e:
                shapes = [d.non_tensor_batch[k].shape for d in data]
                raise ValueError(f"DataProto.concat: non_tensor_batch[{k!r}] cannot be stacked, shapes {shapes}") from e
        meta: dict[str, Any] = {}
        for d in data:
            for k, v in d.meta_info.items():
                meta.setdefault(k, v)
        return DataProto(batch=batch, non_tensor_batch=non, meta_info=meta)

    # ------------------------------------------------------------------ splitting
    def chunk(self, chunks: int) -> list[DataProto]:
        """Split into ``chunks`` equal consecutive parts (views); the length must be divisible."""
        if chunks <= 0:
            raise ValueError(f"chunk: number of chunks must be positive, got {chunks}")
        n = len(self)
        if n % chunks:
            raise ValueError(f"chunk: length {n} is not divisible by {chunks} chunks (remainder {n % chunks}); "
                             f"use pad_to_divisor({chunks}) first")
        size = n // chunks
        return [self._take(slice(i * size, (i + 1) * size)) for i in range(chunks)]

    def split(self, split_size: int) -> list[DataProto]:
        """Consecutive parts of ``split_size`` rows (the last may be shorter); views."""
        if split_size <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size}")
        return [self._take(slice(s, s + split_size)) for s in range(0, len(self), split_size)]

    def repeat(self, repeat_times: int = 2, interleave: bool = True) -> DataProto:
        """Repeat rows: ``interleave`` gives a,a,b,b; otherwise a,b,a,b. Object elements are shared, not copied."""
        if repeat_times < 1:
            raise ValueError(f"repeat: repeat_times must be >= 1, got {repeat_times}")
        n = len(self)
        idx = np.repeat(np.arange(n), repeat_times) if interleave else np.tile(np.arange(n), repeat_times)
        return self._take(idx.astype(np.int64))

    def pad_to_divisor(self, divisor: int) -> tuple[DataProto, int]:
        """Append copies of the first rows (cyclically) until the length divides by ``divisor``.

        Returns ``(padded, pad_size)``; ``padded is self`` when no padding is needed.
        """
        if divisor <= 0:
            raise ValueError(f"pad_to_divisor: divisor must be positive, got {divisor}")
        n = len(self)
        pad = (-n) % divisor
        if pad == 0:
            return self, 0
        if n == 0:
            raise ValueError("pad_to_divisor: cannot pad an empty DataProto")
        extra = self._take(np.arange(pad, dtype=np.int64) % n)
        return DataProto.concat([self, extra]), pad

    def unpad(self, pad_size: int) -> DataProto:
        """Drop the last ``pad_size`` rows (the inverse of :meth:`pad_to_divisor`)."""
        if pad_size < 0 or pad_size > len(self):
            raise ValueError(f"unpad: pad_size {pad_size} out of range for length {len(self)}")
        return self if pad_size == 0 else self._take(slice(0, len(self) - pad_size))

    # ------------------------------------------------------------------ devices and pickling
    def to(self, device: str | torch.device) -> DataProto:
        """Move every tensor to ``device`` (in place); returns ``self``."""
        self.batch = {k: v.to(device) for k, v in self.batch.items()}
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Views are compacted so that a chunk never carries its parent's whole storage through pickle / Ray.
        return {"batch": {k: _compact(v) for k, v in self.batch.items()},
                "non_tensor_batch": self.non_tensor_batch, "meta_info": self.meta_info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
