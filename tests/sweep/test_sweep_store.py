"""The results store: atomic JSON-lines appends, torn lines, duplicates, and Parquet."""

from __future__ import annotations

import json
import math
import os
import warnings

import pytest

from flipless.errors import FileFormatError, FliplessWarning, InputError
from flipless.sweep.store import RECORD_SCHEMA, ResultsStore, encode_record, read_records

SPLIT = {
    "accuracy": 0.75,
    "old_accuracy": 0.5,
    "negative_flip_rate": 0.125,
    "positive_flip_rate": 0.375,
    "relative_negative_flip_rate": 1.0,
    "backward_trust_compatibility": 0.75,
    "backward_error_compatibility": math.nan,  # stored as null
    "size": 8,
}


def record(point_id: str, strength: float | None = 1.0, **extra) -> dict:
    return {
        "schema": RECORD_SCHEMA,
        "point_id": point_id,
        "method": point_id.split("/")[0],
        "kind": "loss",
        "strength_name": "weight",
        "strength": strength,
        "seed": 0,
        "config": {"seed": 0, "model": {"name": "mlp", "settings": {"hidden": [16]}}},
        "metrics": {"train": dict(SPLIT), "dev": dict(SPLIT), "test": dict(SPLIT)},
        "comparison_path": f"points/{point_id}/test_comparison.json",
        "model_path": None,
        "duration_s": 1.5,
        "finished_at": "2026-11-25T16:40:00+00:00",
        "versions": {"flipless": "0.1.0", "torch": "2.13.0", "python": "3.11.7"},
        **extra,
    }


def stored(value: dict) -> dict:
    """What reading gives back: NaN as None."""
    text = json.dumps(value).replace("NaN", "null")
    return json.loads(text)


def test_jsonl_appends_one_line_per_record_in_one_write(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    store = ResultsStore(path)
    writes = []
    real_write = os.write

    def counting_write(descriptor, data):
        writes.append(bytes(data))
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", counting_write)
    store.append(record("a/weight=1.0/seed=0"))
    store.append(record("cross-entropy/seed=0", strength=None))
    monkeypatch.undo()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert writes == [lines[0] + b"\n", lines[1] + b"\n"]  # each record: one write, whole line
    assert json.loads(lines[0])["metrics"]["dev"]["backward_error_compatibility"] is None
    assert read_records(path) == [
        stored(record("a/weight=1.0/seed=0")),
        stored(record("cross-entropy/seed=0", strength=None)),
    ]


def test_a_torn_last_line_is_ignored_then_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultsStore(path).append(record("a/weight=1.0/seed=0"))
    whole = path.read_bytes()
    torn = encode_record(record("b/weight=1.0/seed=0"))[:-40]  # killed mid-write
    path.write_bytes(whole + torn)
    with pytest.warns(FliplessWarning, match=r"last record is incomplete \(\d+ bytes"):
        assert [r["point_id"] for r in read_records(path)] == ["a/weight=1.0/seed=0"]
    with pytest.warns(FliplessWarning, match="incomplete"):
        store = ResultsStore(path)
    assert path.read_bytes() == whole  # truncated to the complete lines
    store.append(record("b/weight=1.0/seed=0"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = [r["point_id"] for r in read_records(path)]
    assert ids == ["a/weight=1.0/seed=0", "b/weight=1.0/seed=0"]


def test_duplicates_resolve_to_the_first_record(tmp_path):
    path = tmp_path / "results.jsonl"
    store = ResultsStore(path)
    store.append(record("a/weight=1.0/seed=0", duration_s=1.0))
    store.append(record("a/weight=1.0/seed=0", duration_s=2.0))
    with pytest.warns(FliplessWarning, match="has more than one record; the first one counts"):
        records = read_records(path)
    assert [r["duration_s"] for r in records] == [1.0]


def test_a_damaged_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"schema": "x"\n' + encode_record(record("a/weight=1.0/seed=0")))
    with pytest.raises(FileFormatError, match=r"line 1 is not a JSON record"):
        read_records(path)
    path.write_bytes(b'{"schema": "other/1", "point_id": "a"}\n')
    with pytest.raises(FileFormatError, match=r"line 1: schema 'other/1'; expected"):
        read_records(path)
    path.write_bytes(b"[1, 2]\n")
    with pytest.raises(FileFormatError, match=r"expected a sweep record"):
        read_records(path)


def test_parquet_holds_the_same_records(tmp_path):
    jsonl, parquet = ResultsStore(tmp_path / "r.jsonl"), ResultsStore(tmp_path / "r.parquet")
    for value in (
        record("cross-entropy/seed=0", strength=None),
        record("a/weight=1.0/seed=0", kept_epoch=3),
    ):
        jsonl.append(value)
        parquet.append(value)
    from_parquet = read_records(tmp_path / "r.parquet")
    assert from_parquet[0] == {**read_records(tmp_path / "r.jsonl")[0], "kept_epoch": None}
    assert from_parquet[1] == read_records(tmp_path / "r.jsonl")[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "r.parquet"]
    leftover = tmp_path / ".r.parquet.123.tmp"
    leftover.write_bytes(b"half")
    ResultsStore(tmp_path / "r.parquet")
    assert not leftover.exists()
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(FileFormatError, match=r"cannot read .* as Parquet"):
        read_records(tmp_path / "bad.parquet")


def test_bad_records_and_paths(tmp_path):
    assert read_records(tmp_path / "none.jsonl") == []
    with pytest.raises(InputError, match=r"expected a results store ending in .jsonl or .parquet"):
        read_records(tmp_path / "r.csv")
    with pytest.raises(InputError, match=r"expected a store ending in"):
        ResultsStore(tmp_path / "r.json")
    store = ResultsStore(tmp_path / "r.jsonl")
    with pytest.raises(InputError, match="a dict with a string point_id"):
        store.append({"schema": RECORD_SCHEMA})
    with pytest.raises(InputError, match=r"has schema None; expected 'flipless\.sweep-record/1'"):
        store.append({"point_id": "x"})
    with pytest.raises(InputError, match="is not JSON-able"):
        store.append(record("a/weight=1.0/seed=0", extra=object()))
    assert not (tmp_path / "r.jsonl").exists()
