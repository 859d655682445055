"""Small digits builds shared by the data tests (a few records per split, built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_TTRV_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ttrv_format"


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory) -> Path:
    from verl.data.digits import build_digits_dataset

    out = tmp_path_factory.mktemp("small_digits")
    build_digits_dataset(out, seed=0, max_per_split=6)
    return out
