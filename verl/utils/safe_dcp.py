"""Load torch.distributed.checkpoint (DCP) folders without running code from them.

A DCP folder holds ``.metadata`` (a pickle: which tensors and byte entries live where) and ``*.distcp`` data
files (tensors, read by torch with ``weights_only=True``, and "byte" entries such as optimizer hyper-parameters,
which torch's default planner reads with ``torch.load(weights_only=False)``). Both pickles here go through
allow-lists instead:

- ``.metadata``: :class:`MetadataUnpickler`, which resolves only the classes DCP writes
  (:data:`ALLOWED_GLOBALS`, plus torch dtypes); any other global is refused before it is looked up.
- byte entries: ``torch.load(weights_only=True)`` (tensors, numbers, strings, containers).

:func:`verify_dcp` checks a folder (every pickle in it) and raises :class:`UnsafeCheckpointError` naming the
file; :func:`load_dcp` verifies, then loads through :class:`SafeFileSystemReader` and :class:`SafeLoadPlanner`.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

METADATA_FILE = ".metadata"
_DCP_METADATA = "torch.distributed.checkpoint.metadata"
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    *((_DCP_METADATA, name) for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.filesystem", "_StoragePrefix"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # torch.layout's pickle form: a lookup by name
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
})


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds a pickle that would run code (or is not a DCP file at all)."""


class MetadataUnpickler(pickle.Unpickler):
    """Unpickler of DCP ``.metadata``: only :data:`ALLOWED_GLOBALS` and torch dtypes resolve."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a class DCP writes)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id (DCP metadata has none)")


def read_metadata(path: str | os.PathLike) -> Metadata:
    """The DCP ``Metadata`` in ``path``, unpickled through :class:`MetadataUnpickler`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            metadata = MetadataUnpickler(f).load()
    except FileNotFoundError:
        raise
    except Exception as err:  # any unpickling failure: a refused global, a truncated or foreign file
        raise UnsafeCheckpointError(f"{path}: not loaded, it is not plain DCP metadata ({err})") from None
    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpointError(f"{path}: not loaded, it holds a {type(metadata).__name__}, not DCP Metadata")
    return metadata


def load_bytes_entry(data: io.BytesIO | bytes, where: str) -> Any:
    """A DCP byte entry through ``torch.load(weights_only=True)``; ``where`` names it in the error."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(f"{where}: not loaded, the entry is not plain data ({reason})") from None


def verify_dcp(folder: str | os.PathLike) -> Metadata:
    """Read every pickle of the DCP ``folder`` through the allow-lists (the metadata and each byte entry);
    :class:`UnsafeCheckpointError` naming the file otherwise. Returns the metadata."""
    folder = Path(folder)
    metadata = read_metadata(folder / METADATA_FILE)
    for index, info in (metadata.storage_data or {}).items():
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue
        data_file = folder / info.relative_path
        if Path(info.relative_path).is_absolute() or ".." in Path(info.relative_path).parts:
            raise UnsafeCheckpointError(f"{folder / METADATA_FILE}: entry {index.fqn!r} points outside the folder")
        with open(data_file, "rb") as f:
            f.seek(info.offset)
            raw = f.read(info.length)
        if info.transform_descriptors:
            raise UnsafeCheckpointError(f"{data_file}: entry {index.fqn!r} is stored transformed; not supported")
        load_bytes_entry(raw, f"{data_file} (entry {index.fqn!r})")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose metadata goes through :class:`MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
        metadata = read_metadata(Path(self.path) / name)
        if getattr(metadata, "storage_meta", None) is None:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """``DefaultLoadPlanner`` whose byte entries load with ``weights_only=True``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        from torch.distributed.checkpoint._traverse import set_element

        fqn = read_item.dest_index.fqn
        obj = load_bytes_entry(value, f"DCP byte entry {fqn!r}")
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def load_dcp(state: dict[str, Any], folder: str | os.PathLike) -> None:
    """``dcp.load(state, folder)`` with every pickle read through the allow-lists (verified first, so a
    refused file raises :class:`UnsafeCheckpointError` here rather than inside DCP's collectives)."""
    import torch.distributed.checkpoint as dcp

    verify_dcp(folder)
    dcp.load(state, storage_reader=SafeFileSystemReader(str(folder)), planner=SafeLoadPlanner())
