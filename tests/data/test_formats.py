from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from verl.data.formats import (
    Record,
    convert_json_to_parquet,
    load_image,
    load_records,
    parse_options,
    read_json_records,
    read_verl_parquet,
    record_to_chat,
    write_verl_parquet,
)
from verl.data.validate import validate_records

from .conftest import SHARED_TTRV_DIR

SHARED_FILES = sorted(SHARED_TTRV_DIR.glob("*/train.json")) if SHARED_TTRV_DIR.is_dir() else []

# Option blocks in every style seen in the TTRV samples (texts hand-checked).
OPTION_CASES = [
    ("<image> \n Look ... (A, B, C, or D). Do not include any explanation. \n Options:\nA. accordion\nB. shovel"
     "\nC. koala\nD. toaster", {"A": "accordion", "B": "shovel", "C": "koala", "D": "toaster"}),
    ("<image> \nQuestion: Find m \\angle R M N.\nChoices:\nA:33\nB:38\nC:71\nD:109",
     {"A": "33", "B": "38", "C": "71", "D": "109"}),
    ("<image> \n Is this movie directed by peter jackson? (A or B). \n Options:\nA. No \nB. Yes.",
     {"A": "No", "B": "Yes."}),
    ("<image> \nprovide the correct option letter, e.g., A, B, C, D.\nChoices:\nA.60\nB.70\nC.80\nD.90\nE.100\n",
     {"A": "60", "B": "70", "C": "80", "D": "90", "E": "100"}),
    ("<image> \nHint: e.g., A, B, C, D, at the end.\nChoices:\n(A) 15*\\degree\n(B) 30*\\degree\n(C) 45*\\degree"
     "\n(D) 60*\\degree\n(E) 90*\\degree\n(F) 120*\\degree",
     {"A": "15*\\degree", "B": "30*\\degree", "C": "45*\\degree", "D": "60*\\degree", "E": "90*\\degree",
      "F": "120*\\degree"}),
    ("<image> \nHow many lanes are there on the left?\n\nOptions are:\nA. 4\nB. 3\nC. 2\nD. 5\n\n"
     "Please answer directly with only the letter of the correct option and nothing else.",
     {"A": "4", "B": "3", "C": "2", "D": "5"}),
    ("<image> \nWhich describes label A in the above diagram?\nA. The exit is straight ahead.\n"
     "B. The exit is to the left.\nC. The exit is to the right.\nPlease answer directly with only the letter.",
     {"A": "The exit is straight ahead.", "B": "The exit is to the left.", "C": "The exit is to the right."}),
    ("<image> \nA cat sits on a mat. What digit is shown? Answer with the digit only.", {}),
]


@pytest.mark.parametrize("text,expected", OPTION_CASES)
def test_parse_options_styles(text, expected):
    assert parse_options(text) == expected


def _make_png(path: Path, color=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), color).save(path)
    return path


def test_digits_json_parquet_round_trip(small_digits, tmp_path):
    json_path = small_digits / "test_rotate_mc.json"
    recs = read_json_records(json_path)
    assert len(recs) == 6
    r0 = recs[0]
    rows = json.loads(json_path.read_text())
    assert r0.uid == f"test_rotate_mc:{rows[0]['id']}" and r0.index == 0
    assert r0.data_source == "digits_test_rotate"
    assert r0.prompt == [{"role": "user", "content": rows[0]["prompt"]}]
    assert r0.images == [str((small_digits / rows[0]["image_path"]).resolve())]
    assert r0.ground_truth == rows[0]["answer"] and set(r0.options) == {"A", "B", "C", "D"}
    assert r0.extra == {"digit": rows[0]["digit"], "shift": "rotate"}
    assert r0.origin == str(json_path)

    pq_path = convert_json_to_parquet(json_path, tmp_path / "out" / "rot.parquet")
    back = read_verl_parquet(pq_path)
    assert len(back) == len(recs)
    for a, b in zip(recs, back):
        for f in ("uid", "index", "data_source", "prompt", "ground_truth", "options", "extra"):
            assert getattr(a, f) == getattr(b, f), f
        assert b.images == [Path(p).read_bytes() for p in a.images]  # embedded file bytes, unchanged
        assert b.origin == str(pq_path)
    # records read back from parquet write the same parquet again
    again = write_verl_parquet(back, tmp_path / "again.parquet")
    assert [r.images for r in read_verl_parquet(again)] == [r.images for r in back]
    # path-only parquet keeps paths; load_records dispatches by extension
    paths_pq = write_verl_parquet(recs, tmp_path / "paths.parquet", embed_images=False)
    mixed = load_records([paths_pq, json_path])
    assert [r.images for r in mixed[:6]] == [r.images for r in recs]
    assert [r.uid for r in mixed[6:]] == [r.uid for r in recs]
    assert [r.uid for r in load_records(str(json_path), format="json")] == [r.uid for r in recs]
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        load_records(json_path, format="csv")
    assert load_image(back[0].images[0]).size == (56, 56)


def test_verl_parquet_plain_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    img = _make_png(tmp_path / "imgs" / "a.png")
    rows = [{"data_source": "geo", "prompt": [{"role": "user", "content": "<image>Q?\nA. x\nB. y"}],
             "images": ["imgs/a.png"], "reward_model": {"ground_truth": "B"}, "extra_info": {"index": 7}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "plain.parquet")
    (r,) = read_verl_parquet(tmp_path / "plain.parquet")
    assert (r.uid, r.index, r.ground_truth, r.options) == ("plain:7", 7, "B", {"A": "x", "B": "y"})
    assert r.images == [str(img.resolve())]
    assert record_to_chat(r) == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?\nA. x\nB. y"}]}]
    bad = [{"data_source": "geo", "images": [], "reward_model": {"ground_truth": "B"}, "extra_info": {"index": 3}}]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet.*index 3.*'prompt'"):
        read_verl_parquet(tmp_path / "bad.parquet")


def test_record_to_chat_orders_placeholders():
    rec = Record(uid="f:1", index=0, data_source="s",
                 prompt=[{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "first <image> then <image>\nwhich?"}], images=["a", "b"])
    assert record_to_chat(rec) == [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "text": "first "}, {"type": "image"},
                                     {"type": "text", "text": " then "}, {"type": "image"},
                                     {"type": "text", "text": "\nwhich?"}]},
    ]


def test_ttrv_missing_field_names_file_and_id(tmp_path):
    p = tmp_path / "set" / "train.json"
    p.parent.mkdir()
    p.write_text(json.dumps([{"prompt": "<image> x", "image_path": "a.png", "answer": "A", "source": "s", "id": 5},
                             {"prompt": "<image> y", "answer": "B", "source": "s", "id": "k9"}]))
    with pytest.raises(ValueError, match=r"train\.json: record id 'k9' \(position 1\).*image_path"):
        read_json_records(p)
    p.write_text(json.dumps([{"prompt": "<image> y", "image_path": "a.png", "answer": "B", "source": "s"}]))
    with pytest.raises(ValueError, match=r"train\.json: record at position 0.*\['id'\]"):
        read_json_records(p)
    with pytest.raises(ValueError, match="cannot infer the data format"):
        load_records(tmp_path / "x.csv")


def _check_ttrv_file(json_path: Path, image_dir: Path, tmp_path: Path) -> list[Record]:
    """Remap every image_path to a generated PNG, then read, validate, convert and read back."""
    rows = json.loads(json_path.read_text())
    pngs = sorted(image_dir.glob("*.png"))
    for i, row in enumerate(rows):
        row["image_path"] = str(pngs[i % len(pngs)])
    copy = tmp_path / json_path.parent.name / "train.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(json.dumps(rows))
    recs = read_json_records(copy)
    assert len(recs) == len(rows)
    kept, report = validate_records(recs)
    assert len(kept) == len(rows) and report.n_skipped == 0
    for rec, row in zip(recs, rows):
        assert rec.uid == f"{json_path.parent.name}/train:{row['id']}"
        assert rec.ground_truth == str(row["answer"])
        assert len(rec.options) >= 2, (json_path, row["id"])
        if len(rec.ground_truth) == 1:  # a letter answer must be one of the parsed options
            assert rec.ground_truth in rec.options, (json_path, row["id"], rec.options)
        assert all(v and "\n" not in v for v in rec.options.values())
    back = read_verl_parquet(convert_json_to_parquet(copy, tmp_path / f"{json_path.parent.name}.parquet"))
    assert [(r.uid, r.ground_truth, r.options) for r in back] == [(r.uid, r.ground_truth, r.options) for r in recs]
    return recs


def test_self_written_ttrv_file(small_digits, tmp_path):
    """The same checks as on the shared samples, on a TTRV-style file written here (always runs)."""
    rows = [
        {"prompt": "<image> \n Look at the given image and identify what it shows. Choose the correct answer from "
                   "the options below (A, B, C, or D). \n Options:\nA. koala\nB. shovel\nC. cat\nD. dog",
         "image_path": "/nonexistent/x.jpg", "answer": "C", "source": "gpqa_diamond", "id": "0"},
        {"prompt": "<image> \nQuestion: angle?\nChoices:\nA:33\nB:38\nC:71\nD:109", "image_path": "/x.png",
         "answer": "D", "source": "gpqa_diamond", "id": 12},
        {"prompt": "<image> \n Is it a dog? (A or B). \n Options:\nA. No \nB. Yes.", "image_path": "/y.png",
         "answer": "A", "source": "gpqa_diamond", "id": 2163},
        {"prompt": "<image> \nFind the bearing.\nChoice:\nA. 090^\\circ T\nB. 180^\\circ T\nC. 049^\\circ T",
         "image_path": "/z.png", "answer": "090^\\circ T", "source": "gpqa_diamond", "id": "7"},
    ]
    src = tmp_path / "mine_20" / "train.json"
    src.parent.mkdir()
    src.write_text(json.dumps(rows))
    recs = _check_ttrv_file(src, small_digits / "images" / "test_noise", tmp_path / "work")
    assert recs[1].uid == "mine_20/train:12" and recs[3].ground_truth == "090^\\circ T"
    assert recs[2].options == {"A": "No", "B": "Yes."}


@pytest.mark.skipif(not SHARED_FILES, reason="shared TTRV samples (../shared/data/ttrv_format) not present")
@pytest.mark.parametrize("json_path", SHARED_FILES, ids=lambda p: p.parent.name)
def test_shared_ttrv_samples_load(json_path, small_digits, tmp_path):
    _check_ttrv_file(json_path, small_digits / "images" / "test_blur", tmp_path)


def test_convert_cli(digits_dir, tmp_path):
    from verl.data.formats import load_records, main

    out = main(["convert", str(digits_dir / "test_noise_mc.json"), str(tmp_path / "x.parquet")])
    a, b = load_records([digits_dir / "test_noise_mc.json"]), load_records([out])
    assert len(a) == len(b) and [r.ground_truth for r in a] == [r.ground_truth for r in b]
