"""Data layer: formats (JSON records, verl parquet) → :class:`verl.data.formats.Record`, validation,
the digits task builder and resumable batching. Submodules are imported explicitly (no heavy imports here)."""
