"""DataProto: every method, with hand-written expectations."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from verl.protocol import DataProto, DataProtoItem


def obj(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def make(n: int = 4, meta: dict | None = None) -> DataProto:
    """Rows i = 0..n-1: x = [i, 10 i], mask = i % 2, name = 'r<i>', blob = bytes, msgs = a list per row."""
    return DataProto.from_dict(
        tensors={"x": torch.tensor([[i, 10 * i] for i in range(n)]), "mask": torch.tensor([i % 2 for i in range(n)])},
        non_tensors={"name": [f"r{i}" for i in range(n)], "blob": [bytes([i]) for i in range(n)],
                     "msgs": [[{"role": "user", "content": str(i)}] for i in range(n)]},
        meta_info=meta if meta is not None else {"temperature": 1.0},
    )


def names(d: DataProto) -> list[str]:
    return list(d.non_tensor_batch["name"])


# ---------------------------------------------------------------- construction
def test_from_dict_converts_lists_to_1d_object_arrays():
    d = DataProto.from_dict(non_tensors={"pair": [[1, 2], [3, 4], [5, 6]], "b": [b"a", b"bc", b""]})
    assert d.non_tensor_batch["pair"].dtype == object and d.non_tensor_batch["pair"].shape == (3,)
    assert d.non_tensor_batch["pair"][1] == [3, 4]
    assert d.non_tensor_batch["b"][1] == b"bc"
    assert len(d) == 3 and d.meta_info == {} and d.batch == {}


def test_from_dict_length_mismatch_names_key_and_lengths():
    with pytest.raises(ValueError, match=r"batch\['y'\] has length 3 but batch\['x'\] has length 4"):
        DataProto.from_dict(tensors={"x": torch.zeros(4), "y": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"non_tensor_batch\['s'\] has length 2 .* length 4"):
        DataProto.from_dict(tensors={"x": torch.zeros(4)}, non_tensors={"s": ["a", "b"]})


def test_from_dict_rejects_wrong_types():
    with pytest.raises(TypeError, match=r"tensors\['x'\]"):
        DataProto.from_dict(tensors={"x": [1, 2]})
    with pytest.raises(TypeError, match=r"non_tensor_batch\['s'\]"):
        DataProto.from_dict(non_tensors={"s": "abc"})
    with pytest.raises(ValueError, match="0-dim"):
        DataProto.from_dict(tensors={"x": torch.tensor(1.0)})


def test_empty_proto_and_check_consistency_after_mutation():
    assert len(DataProto()) == 0
    d = make(3)
    d.batch["bad"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"batch\['bad'\] has length 5"):
        d.check_consistency()


# ---------------------------------------------------------------- indexing
def test_int_index_returns_item_with_row_values():
    d = make(4)
    item = d[2]
    assert isinstance(item, DataProtoItem)
    assert item.batch["x"].tolist() == [2, 20]
    assert item.non_tensor_batch["name"] == "r2" and item.non_tensor_batch["blob"] == b"\x02"
    assert item.meta_info == {"temperature": 1.0}
    assert d[-1].non_tensor_batch["name"] == "r3"
    with pytest.raises(IndexError, match="out of range"):
        d[4]
    assert [it.non_tensor_batch["name"] for it in d] == ["r0", "r1", "r2", "r3"]


def test_slice_list_array_tensor_and_mask_indexing():
    d = make(5)
    assert names(d[1:3]) == ["r1", "r2"] and d[1:3].batch["x"].tolist() == [[1, 10], [2, 20]]
    assert names(d[[4, 0, 0]]) == ["r4", "r0", "r0"]
    assert names(d[np.array([3, -1])]) == ["r3", "r4"]
    assert names(d[torch.tensor([1, 2])]) == ["r1", "r2"]
    mask = torch.tensor([True, False, True, False, False])
    assert names(d[mask]) == ["r0", "r2"] and d[mask].batch["mask"].tolist() == [0, 0]
    assert len(d[[]]) == 0
    with pytest.raises(IndexError, match="boolean index has shape"):
        d[torch.tensor([True, False])]
    with pytest.raises(IndexError, match="out of range"):
        d[[0, 7]]


def test_slices_copy_meta_info_shallowly():
    d = make(3)
    part = d[:2]
    part.meta_info["new"] = 1
    assert "new" not in d.meta_info


# ---------------------------------------------------------------- select / pop / rename
def test_select_keys_and_deepcopy():
    d = make(3)
    s = d.select(batch_keys=["x"], non_tensor_batch_keys=["name"], meta_info_keys=[])
    assert list(s.batch) == ["x"] and list(s.non_tensor_batch) == ["name"] and s.meta_info == {}
    s.batch["x"][0, 0] = 99  # shared storage without deepcopy
    assert d.batch["x"][0, 0] == 99
    c = d.select(deepcopy=True)
    c.batch["x"][0, 0] = -5
    c.non_tensor_batch["msgs"][0].append("extra")
    assert d.batch["x"][0, 0] == 99 and len(d.non_tensor_batch["msgs"][0]) == 1
    assert set(c.batch) == {"x", "mask"} and set(c.non_tensor_batch) == {"name", "blob", "msgs"}
    with pytest.raises(KeyError, match=r"no key\(s\) \['nope'\]"):
        d.select(batch_keys=["nope"])


def test_pop_removes_keys_and_returns_them():
    d = make(3)
    p = d.pop(batch_keys=["mask"], non_tensor_batch_keys=["blob"], meta_info_keys=["temperature"])
    assert list(p.batch) == ["mask"] and list(p.non_tensor_batch) == ["blob"] and p.meta_info == {"temperature": 1.0}
    assert list(d.batch) == ["x"] and set(d.non_tensor_batch) == {"name", "msgs"} and d.meta_info == {}
    assert d.pop().batch == {}  # None pops nothing
    with pytest.raises(KeyError):
        d.pop(batch_keys=["mask"])


def test_rename():
    d = make(2)
    d.rename("x", "input_ids").rename(["name"], ["label"])
    assert set(d.batch) == {"input_ids", "mask"} and "label" in d.non_tensor_batch
    with pytest.raises(KeyError, match="already exists"):
        d.rename("mask", "input_ids")
    with pytest.raises(KeyError, match="no key 'zzz'"):
        d.rename("zzz", "a")


# ---------------------------------------------------------------- union / concat
def test_union_adds_keys_and_checks_equal_values():
    d = make(3)
    other = DataProto.from_dict(tensors={"x": torch.tensor([[0, 0], [1, 10], [2, 20]]), "lp": torch.ones(3)},
                                non_tensors={"msgs": [[{"role": "user", "content": str(i)}] for i in range(3)]},
                                meta_info={"step": 7})
    out = d.union(other)
    assert out is d and set(d.batch) == {"x", "mask", "lp"} and d.meta_info == {"temperature": 1.0, "step": 7}
    with pytest.raises(ValueError, match=r"batch\['x'\]"):
        make(3).union(DataProto.from_dict(tensors={"x": torch.zeros(3, 2, dtype=torch.long)}))
    with pytest.raises(ValueError, match=r"non_tensor_batch\['name'\]"):
        make(3).union(DataProto.from_dict(non_tensors={"name": ["r0", "r1", "XX"]}))
    with pytest.raises(ValueError, match=r"meta_info\['temperature'\]"):
        make(3).union(DataProto(meta_info={"temperature": 0.5}))
    with pytest.raises(ValueError, match=r"lengths differ \(3 vs 2\)"):
        make(3).union(make(2))


def test_concat_rows_and_meta():
    a, b = make(2, meta={"k": 1}), make(3, meta={"k": 2, "j": 3})
    c = DataProto.concat([a, b])
    assert names(c) == ["r0", "r1", "r0", "r1", "r2"]
    assert c.batch["x"][:, 0].tolist() == [0, 1, 0, 1, 2]
    assert c.meta_info == {"k": 1, "j": 3}  # first value wins
    with pytest.raises(ValueError, match="item 1 has keys"):
        DataProto.concat([a, a.select(batch_keys=["x"])])
    with pytest.raises(ValueError, match=r"batch\['x'\] cannot be stacked"):
        DataProto.concat([a, DataProto.from_dict(tensors={"x": torch.zeros(1, 3, dtype=torch.long),
                                                          "mask": torch.zeros(1, dtype=torch.long)},
                                                 non_tensors={k: ["?"] for k in ("name", "blob", "msgs")})])
    with pytest.raises(ValueError, match="at least one"):
        DataProto.concat([])


# ---------------------------------------------------------------- chunk / split / repeat
def test_chunk_equal_parts_and_error_naming_sizes():
    parts = make(6).chunk(3)
    assert [names(p) for p in parts] == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
    with pytest.raises(ValueError, match="length 5 is not divisible by 2 chunks"):
        make(5).chunk(2)
    with pytest.raises(ValueError, match="positive"):
        make(4).chunk(0)


def test_split_last_part_shorter():
    parts = make(5).split(2)
    assert [names(p) for p in parts] == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    assert make(1).split(4)[0].batch["x"].tolist() == [[0, 0]]


def test_repeat_interleave_and_tile_order():
    d = make(2)
    assert names(d.repeat(2, interleave=True)) == ["r0", "r0", "r1", "r1"]
    assert names(d.repeat(3, interleave=False)) == ["r0", "r1", "r0", "r1", "r0", "r1"]
    assert d.repeat(2).batch["x"].tolist() == [[0, 0], [0, 0], [1, 10], [1, 10]]
    assert d.repeat(2, interleave=False).non_tensor_batch["blob"].tolist() == [b"\x00", b"\x01", b"\x00", b"\x01"]
    with pytest.raises(ValueError, match="repeat_times"):
        d.repeat(0)


# ---------------------------------------------------------------- padding
def test_pad_len5_to_divisor4_gives_8_rows_and_unpad_back():
    d = make(5)
    padded, pad = d.pad_to_divisor(4)
    assert pad == 3 and len(padded) == 8
    assert names(padded) == ["r0", "r1", "r2", "r3", "r4", "r0", "r1", "r2"]
    assert padded.batch["x"][:, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    back = padded.unpad(pad)
    assert names(back) == names(d) and torch.equal(back.batch["x"], d.batch["x"])


def test_pad_cycles_when_pad_exceeds_length_and_noop_when_divisible():
    padded, pad = make(2).pad_to_divisor(7)
    assert pad == 5 and names(padded) == ["r0", "r1", "r0", "r1", "r0", "r1", "r0"]
    d = make(4)
    same, pad0 = d.pad_to_divisor(2)
    assert same is d and pad0 == 0 and d.unpad(0) is d
    with pytest.raises(ValueError, match="out of range"):
        d.unpad(5)


# ---------------------------------------------------------------- device / pickling
def test_to_moves_tensors_in_place():
    d = make(2)
    assert d.to("cpu") is d and d.batch["x"].device.type == "cpu"


def test_pickle_roundtrip_and_chunks_do_not_carry_parent_storage():
    big = DataProto.from_dict(tensors={"x": torch.zeros(1000, 256)}, non_tensors={"s": [f"{i}" for i in range(1000)]},
                              meta_info={})
    part = big.chunk(10)[3]
    blob = pickle.dumps(part)
    assert len(blob) < 100 * 256 * 4 * 1.5  # ~100 rows, not the 1000-row parent
    back = pickle.loads(blob)
    assert len(back) == 100 and back.non_tensor_batch["s"][0] == "300"
    full = pickle.loads(pickle.dumps(make(3)))
    assert names(full) == ["r0", "r1", "r2"] and full.non_tensor_batch["msgs"][2][0]["content"] == "2"


def test_repr_is_compact():
    r = repr(make(2))
    assert "len=2" in r and "x: (2, 2) int64" in r
