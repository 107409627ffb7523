"""Schema version 2: the comparison JSON is a summary; every sample's outcome goes to a Parquet
instances file that the JSON names; version 1 files (instances inline) read as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flipless import Comparison, FileFormatError, compare
from flipless.errors import FliplessWarning
from flipless.metrics.instance_file import read_instances, write_instances
from flipless.metrics.parts import Instances
from flipless.report.data import comparison_payload

FIXTURES = Path(__file__).parent / "fixtures"


def make_comparison(size: int, seed: int = 7, **options) -> Comparison:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size)
    old = rng.normal(size=(size, 4)) + 2.0 * np.eye(4)[labels]
    new = rng.normal(size=(size, 4)) + 2.5 * np.eye(4)[labels]
    settings = {
        "ids": [f"s{i}" for i in range(size)],
        "class_names": ["cat", "dog", "<b>owl</b>", "émeu"],
        "slices": {"site": rng.choice(["north", "south"], size)},
        "n_bootstrap": 100,
        "seed": 3,
    }
    return compare(old, new, labels, **(settings | options))


@pytest.fixture
def comparison() -> Comparison:
    return make_comparison(300)


def assert_same_instances(found: Instances, expected: Instances) -> None:
    np.testing.assert_array_equal(found.ids, expected.ids)
    for name in ("labels", "old_pred", "new_pred", "codes", "old_confidence", "new_confidence"):
        got, want = getattr(found, name), getattr(expected, name)
        assert (got is None) == (want is None), name
        if want is not None:
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)


# The summary --------------------------------------------------------------------------------------
def test_summary_json_has_no_instances_and_lists_the_most_confident_regressions(
    comparison, tmp_path
):
    path = tmp_path / "c.json"
    comparison.to_json(str(path), instances=False)
    document = json.loads(path.read_text())
    assert document["schema_version"] == 2
    assert document["instances"] is None and document["instances_file"] is None
    assert not list(tmp_path.glob("*.parquet"))

    # By hand: old right and new wrong, ordered by the new model's softmax confidence.
    kept = comparison.instances
    broken = np.flatnonzero((kept.old_pred == kept.labels) & (kept.new_pred != kept.labels))
    assert broken.size > 10
    order = broken[np.argsort(-kept.new_confidence[broken], kind="stable")][:10]
    listed = document["top_regressions"]
    assert [row["id"] for row in listed] == [f"s{i}" for i in order]
    assert [row["new_confidence"] for row in listed] == kept.new_confidence[order].tolist()
    names = ["cat", "dog", "<b>owl</b>", "émeu"]
    assert [row["label_name"] for row in listed] == [names[k] for k in kept.labels[order]]
    assert all(row["old_pred"] == row["label"] != row["new_pred"] for row in listed)
    assert listed == comparison.top_regressions(10)[list(listed[0])].to_dict("records")


def test_summary_does_not_grow_with_the_samples(tmp_path):
    sizes = {}
    for size in (400, 40_000):
        make_comparison(size).to_json(str(tmp_path / f"{size}.json"), instances=False)
        sizes[size] = (tmp_path / f"{size}.json").stat().st_size
    assert sizes[40_000] < 1.1 * sizes[400]


def test_summary_read_back_writes_the_same_summary(comparison, tmp_path):
    path = tmp_path / "c.json"
    comparison.to_json(str(path), instances=False)
    back = Comparison.from_json(str(path))
    assert back.instances is None
    assert back.to_dict() == comparison.to_dict(instances=False)


# The instances file ------------------------------------------------------------------------------
def test_to_json_writes_the_instances_beside_and_from_json_reads_them(comparison, tmp_path):
    path = tmp_path / "update.json"
    comparison.to_json(str(path))
    document = json.loads(path.read_text())
    assert document["instances"] is None
    assert document["instances_file"] == "update.instances.parquet"

    back = Comparison.from_json(str(path))
    assert_same_instances(back.instances, comparison.instances)
    assert back.to_dict() == comparison.to_dict()

    frame = pd.read_parquet(tmp_path / "update.instances.parquet")
    kept = comparison.instances
    old_right, new_right = kept.old_pred == kept.labels, kept.new_pred == kept.labels
    np.testing.assert_array_equal(frame["negative_flip"], old_right & ~new_right)
    np.testing.assert_array_equal(frame["positive_flip"], ~old_right & new_right)
    np.testing.assert_array_equal(frame["old_correct"], old_right)
    assert frame["id"].tolist() == [f"s{i}" for i in range(300)]


def test_the_report_of_json_and_instances_equals_the_in_memory_report(comparison, tmp_path):
    path = tmp_path / "c.json"
    (tmp_path / "rows").mkdir()
    comparison.to_json(str(path), instances=str(tmp_path / "rows" / "all.parquet"))
    assert json.loads(path.read_text())["instances_file"] == "rows/all.parquet"
    back = Comparison.from_json(str(path))
    assert comparison_payload(back, "c", {}, None) == comparison_payload(comparison, "c", {}, None)


@pytest.mark.parametrize(
    "ids",
    [
        None,  # row numbers
        np.arange(10, 0, -1) * 7,  # integers
        [1, "a", 2.5, "b", 3, "c", 4, "d", 5, "e"],  # mixed: stored as JSON text
    ],
)
def test_ids_of_every_kind_round_trip(ids, tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    new = np.array([0, 2, 2, 1, 1, 0, 0, 1, 1, 0])
    comparison = compare(labels[::-1] % 3, new, labels, ids=ids)
    write_instances(comparison.instances, tmp_path / "i.parquet")
    found = read_instances(tmp_path / "i.parquet")
    assert_same_instances(found, comparison.instances)
    assert (found.sample_ids is None) == (ids is None)
    if ids is not None:
        assert found.sample_ids.tolist() == list(ids)


# Version 1 files ---------------------------------------------------------------------------------
def test_version_1_files_read_as_before():
    path = FIXTURES / "comparison_v1.json"
    stored = json.loads(path.read_text())
    back = Comparison.from_json(str(path))
    codes = np.array(stored["instances"]["codes"])
    ids = np.array(stored["instances"]["ids"])
    assert back.negative_flip_ids().tolist() == ids[(codes & 3) == 1].tolist()
    assert back.counts.as_dict() == stored["counts"]
    report = json.loads((FIXTURES / "comparison_v1_report.json").read_text())
    assert comparison_payload(back, "update", {}, None) == report


def test_a_version_1_file_rewritten_as_version_2_gives_the_same_report(tmp_path):
    old_version = Comparison.from_json(str(FIXTURES / "comparison_v1.json"))
    old_version.to_json(str(tmp_path / "v2.json"))
    back = Comparison.from_json(str(tmp_path / "v2.json"))
    report = json.loads((FIXTURES / "comparison_v1_report.json").read_text())
    assert comparison_payload(back, "update", {}, None) == report


# Missing, moved and foreign files --------------------------------------------------------------
def test_a_moved_json_warns_and_keeps_counts_until_told_where_the_instances_are(
    comparison, tmp_path
):
    comparison.to_json(str(tmp_path / "c.json"))
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(tmp_path / "c.json", moved / "c.json")
    with pytest.warns(FliplessWarning, match=r"names the instances file 'c.instances.parquet'"):
        counts_only = Comparison.from_json(str(moved / "c.json"))
    assert counts_only.instances is None
    assert counts_only.counts == comparison.counts
    found = Comparison.from_json(str(moved / "c.json"), str(tmp_path / "c.instances.parquet"))
    assert_same_instances(found.instances, comparison.instances)


def test_instances_of_another_comparison_are_refused(comparison, tmp_path):
    comparison.to_json(str(tmp_path / "a.json"))
    other = make_comparison(300, seed=8)
    other.to_json(str(tmp_path / "b.json"))
    with pytest.raises(FileFormatError, match="do not give back the comparison's per-class"):
        Comparison.from_json(str(tmp_path / "b.json"), str(tmp_path / "a.instances.parquet"))
    smaller = make_comparison(50)
    smaller.to_json(str(tmp_path / "s.json"))
    with pytest.raises(FileFormatError, match=r"one row per counted sample \(50\)"):
        Comparison.from_json(str(tmp_path / "s.json"), str(tmp_path / "a.instances.parquet"))


def test_files_that_are_not_instances_files(comparison, tmp_path):
    comparison.to_json(str(tmp_path / "c.json"), instances=False)
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"id": [1], "label": [0]}).to_parquet(plain)
    with pytest.raises(FileFormatError, match="not a flipless instances file"):
        Comparison.from_json(str(tmp_path / "c.json"), str(plain))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(FileFormatError, match="could not be read as Parquet"):
        read_instances(broken)
    with pytest.raises(FileFormatError, match="No instances file at"):
        read_instances(tmp_path / "missing.parquet")
