"""Dataset formats: JSON records and verl parquet, read into one common :class:`Record`.

JSON records (the layout of the public TTRV release, recipes/ttrv): a list of
``{"prompt": "<image> \\n ...", "image_path": ..., "answer": "C", "source": ..., "id": ...}``; ``image_path``
is absolute or relative to ``image_root`` (default: the JSON file's folder); it may also be a list of paths (one per ``<image>``).

verl parquet: rows ``data_source``, ``prompt`` (chat messages, ``<image>`` placeholders in the text),
``images`` (list of ``{"bytes", "path"}`` dicts, or plain paths / bytes), ``reward_model.ground_truth``,
``extra_info.index`` (plus ``extra_info.uid`` / ``options`` / ``extra`` written by :func:`write_verl_parquet`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl.data.images import (  # noqa: F401  (re-exported: workers import them from here)
    IMAGE_PLACEHOLDER,
    content_text,
    image_ref_name,
    load_image,
    read_image_bytes,
    record_to_chat,
)
from verl.rewards.options import parse_options  # noqa: F401  (one option parser for the project)

JSON_FIELDS = ("prompt", "image_path", "answer", "source", "id")
_GENERIC_STEMS = {"train", "test", "val", "valid", "validation", "dev", "data"}


@dataclass
class Record:
    """One prompt: chat messages, image references (paths or encoded bytes), optional label.

    ``ground_truth`` is for metrics only; ``origin`` is the file it came from (for error messages).
    """

    uid: str
    index: int
    data_source: str
    prompt: list[dict]
    images: list[str | bytes] = field(default_factory=list)
    ground_truth: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    origin: str = ""

    @property
    def record_id(self) -> str:
        """The record's id inside its file (the part of ``uid`` after the last ``:``)."""
        return self.uid.rsplit(":", 1)[-1]

    def where(self) -> str:
        """``"<file>: record id '<id>' (position <index>)"`` for error messages."""
        return f"{self.origin or '<memory>'}: record id {self.record_id!r} (position {self.index})"

    def user_text(self) -> str:
        """Text of all user messages joined (placeholders kept)."""
        return "\n".join(content_text(m.get("content")) for m in self.prompt if m.get("role") == "user")


def file_key(path: str | Path) -> str:
    """Stable uid prefix of a data file: its stem, or ``<folder>/<stem>`` for generic stems (``train``...)."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if p.stem.lower() in _GENERIC_STEMS and p.parent.name else p.stem


def _resolve_image(value: Any, root: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: 'image_path' must be a non-empty string, got {value!r:.100}")
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def read_json_records(path: str | Path, image_root: str | Path | None = None,
                   data_source: str | None = None) -> list[Record]:
    """Read a JSON records file (a list of records, or JSON lines for ``.jsonl``).

    ``data_source`` overrides every record's ``source`` (the public files all say ``gpqa_diamond``).
    A missing field raises ``ValueError`` naming the file, the record id (or position) and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    key = file_key(path)
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: record at position {i} is not an object ({type(row).__name__})")
        rid = row.get("id")
        where = f"{path}: record id {str(rid)!r} (position {i})" if rid is not None else f"{path}: record at position {i}"
        required = [f for f in JSON_FIELDS if not (f == "source" and data_source is not None)]
        missing = [f for f in required if f not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing} (JSON records need {list(JSON_FIELDS)})")
        if rid is None or str(rid) == "":
            raise ValueError(f"{where}: field 'id' is empty")
        if not isinstance(row["prompt"], str):
            raise ValueError(f"{where}: field 'prompt' must be a string, got {type(row['prompt']).__name__}")
        paths = row["image_path"] if isinstance(row["image_path"], list) else [row["image_path"]]
        answer = row["answer"]
        records.append(Record(
            uid=f"{key}:{rid}",
            index=i,
            data_source=str(data_source if data_source is not None else row["source"]),
            prompt=[{"role": "user", "content": row["prompt"]}],
            images=[_resolve_image(p, root, where) for p in paths],
            ground_truth=None if answer is None else str(answer),
            options=parse_options(row["prompt"]),
            extra={k: v for k, v in row.items() if k not in JSON_FIELDS},
            origin=str(path),
        ))
    return records


def _parquet_images(value: Any, base: Path, where: str) -> list[str | bytes]:
    out: list[str | bytes] = []
    for j, img in enumerate(list(value) if value is not None else []):
        if isinstance(img, dict):
            data, ipath = img.get("bytes"), img.get("path")
            if data:
                out.append(bytes(data))
                continue
            img = ipath
        if isinstance(img, bytes | bytearray):
            out.append(bytes(img))
        elif isinstance(img, str) and img:
            p = Path(img).expanduser()
            out.append(str(p if p.is_absolute() else (base / p).resolve()))
        else:
            raise ValueError(f"{where}: image {j} has neither bytes nor a path ({img!r:.100})")
    return out


def _loads(value: Any, default: Any) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def read_verl_parquet(path: str | Path) -> list[Record]:
    """Read a verl-style parquet file into records (relative image paths resolve against its folder)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parquet data file not found: {path}")
    rows = pq.read_table(path).to_pylist()
    key = file_key(path)
    records = []
    for i, row in enumerate(rows):
        extra_info = dict(row.get("extra_info") or {})
        idx = extra_info.get("index")
        index = int(idx) if idx is not None else i
        where = f"{path}: row {i} (index {index})"
        for f in ("data_source", "prompt"):
            if row.get(f) is None:
                raise ValueError(f"{where}: missing field {f!r} (verl rows need data_source, prompt, images, "
                                 "reward_model.ground_truth, extra_info.index)")
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, list) or not all(isinstance(m, dict) and "role" in m for m in prompt):
            raise ValueError(f"{where}: 'prompt' must be a list of chat messages with 'role' and 'content'")
        prompt = [{"role": m["role"], "content": m.get("content")} for m in prompt]
        gt = (row.get("reward_model") or {}).get("ground_truth")
        rec = Record(
            uid=str(extra_info.get("uid") or f"{key}:{index}"),
            index=index,
            data_source=str(row["data_source"]),
            prompt=prompt,
            images=_parquet_images(row.get("images"), path.parent, where),
            ground_truth=None if gt is None else str(gt),
            extra=_loads(extra_info.get("extra"), {}),
            origin=str(path),
        )
        options = _loads(extra_info.get("options"), None)
        rec.options = dict(options) if options is not None else parse_options(rec.user_text())
        records.append(rec)
    return records


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("uid", pa.string()), ("options", pa.string()),
                                  ("extra", pa.string())])),
    ])


def write_verl_parquet(records: Sequence[Record], path: str | Path, embed_images: bool = True) -> Path:
    """Write records as a verl parquet file; with ``embed_images`` the file bytes are stored (self-contained).

    Message contents are written as strings with ``<image>`` placeholders; options and extra as JSON.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    rows = []
    for r in records:
        images = []
        for ref in r.images:
            if isinstance(ref, bytes | bytearray):
                images.append({"bytes": bytes(ref), "path": None})
            elif embed_images:
                try:
                    images.append({"bytes": read_image_bytes(ref), "path": str(ref)})
                except FileNotFoundError as e:
                    raise FileNotFoundError(f"{r.where()}: {e}") from e
            else:
                images.append({"bytes": None, "path": str(ref)})
        rows.append({
            "data_source": r.data_source,
            "prompt": [{"role": m["role"], "content": content_text(m.get("content"))} for m in r.prompt],
            "images": images,
            "reward_model": {"ground_truth": r.ground_truth, "style": "rule"},
            "extra_info": {"index": int(r.index), "uid": r.uid, "options": json.dumps(r.options),
                           "extra": json.dumps(r.extra, sort_keys=True, default=str)},
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=_parquet_schema()), path)
    return path


def convert_json_to_parquet(json_path: str | Path, parquet_path: str | Path, image_root: str | Path | None = None,
                            embed_images: bool = True, data_source: str | None = None) -> Path:
    """JSON records → verl parquet (images embedded by default)."""
    records = read_json_records(json_path, image_root=image_root, data_source=data_source)
    return write_verl_parquet(records, parquet_path, embed_images=embed_images)


def load_records(paths: str | Path | Iterable[str | Path], format: str = "auto",
                 image_root: str | Path | None = None) -> list[Record]:
    """Read one or more data files; ``format`` is ``auto`` (by extension), ``json`` or ``parquet``."""
    if isinstance(paths, str | Path):
        paths = [paths]
    paths = [Path(str(p)) for p in paths]
    if not paths:
        raise ValueError("load_records: no data files given")
    if format not in ("auto", "json", "parquet"):
        raise ValueError(f"load_records: unknown format {format!r} (use auto, json or parquet)")
    records: list[Record] = []
    for p in paths:
        kind = format
        if kind == "auto":
            if p.suffix in (".json", ".jsonl"):
                kind = "json"
            elif p.suffix in (".parquet", ".pq"):
                kind = "parquet"
            else:
                raise ValueError(f"{p}: cannot infer the data format from the extension {p.suffix!r} "
                                 "(.json/.jsonl = JSON records, .parquet = verl parquet); pass format= explicitly")
        if kind == "json":
            records.extend(read_json_records(p, image_root=image_root))
        else:
            records.extend(read_verl_parquet(p))
    return records


def main(argv: list[str] | None = None) -> Path:
    """CLI: ``python -m verl.data.formats convert IN.json OUT.parquet [--image-root DIR] [--no-embed]``."""
    import argparse

    p = argparse.ArgumentParser(description="Convert JSON records to verl parquet.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="JSON records -> verl parquet")
    c.add_argument("json_path")
    c.add_argument("parquet_path")
    c.add_argument("--image-root", default=None)
    c.add_argument("--no-embed", action="store_true", help="keep image paths instead of embedding bytes")
    c.add_argument("--data-source", default=None)
    a = p.parse_args(argv)
    out = convert_json_to_parquet(a.json_path, a.parquet_path, image_root=a.image_root,
                                  embed_images=not a.no_embed, data_source=a.data_source)
    print(f"wrote {out} ({len(read_verl_parquet(out))} rows)")
    return out


if __name__ == "__main__":
    main()
