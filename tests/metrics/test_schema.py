"""JSON round trip of a Comparison, and the errors for documents that are not one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flipless import Comparison, FileFormatError, compare


@pytest.fixture
def comparison() -> Comparison:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 300)
    old = rng.normal(size=(300, 4)) + 2.0 * np.eye(4)[labels]
    new = rng.normal(size=(300, 4)) + 2.5 * np.eye(4)[labels]
    return compare(
        old,
        new,
        labels,
        ids=[f"s{i}" for i in range(300)],
        class_names=["cat", "dog", "<b>owl</b>", "émeu"],
        slices={"site": rng.choice(["north", "south"], 300), "age": rng.integers(0, 3, 300)},
        seed=3,
    )


def test_round_trip_keeps_every_count_rate_and_instance(comparison, tmp_path):
    path = tmp_path / "comparison.json"
    comparison.to_json(str(path))
    back = Comparison.from_json(str(path))
    np.testing.assert_array_equal(back.class_outcomes, comparison.class_outcomes)
    np.testing.assert_array_equal(back.flip_matrix, comparison.flip_matrix)
    assert back.class_names == comparison.class_names
    for name, rate in comparison.counts.rates().items():
        got = back.rate(name)
        assert (got.numerator, got.denominator) == (rate.numerator, rate.denominator)
    assert back.per_slice().equals(comparison.per_slice())
    assert back.negative_flip_ids().tolist() == comparison.negative_flip_ids().tolist()
    np.testing.assert_allclose(
        back.instances.new_confidence, comparison.instances.new_confidence, rtol=1e-6
    )
    assert back.significance == comparison.significance


def test_document_is_strict_json_with_null_for_undefined_rates():
    labels = np.array([0, 1, 0, 1])
    same = compare(labels, labels, labels)  # the new model makes no errors: NFI, BEC undefined
    text = same.to_json()
    document = json.loads(text)  # strict JSON (no NaN tokens) parses
    assert "NaN" not in text
    assert document["rates"]["backward_error_compatibility"]["value"] is None
    assert "no errors" in document["rates"]["backward_error_compatibility"]["reason"]
    assert math.isnan(Comparison.from_dict(document).backward_error_compatibility)


def test_counts_only_documents(comparison):
    document = comparison.to_dict(instances=False)
    assert document["instances"] is None
    back = Comparison.from_dict(document)
    with pytest.raises(Exception, match="counts only"):
        back.negative_flip_ids()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(schema="something.else"), "Expected a 'flipless.comparison'"),
        (lambda d: d.update(schema_version=99), "schema version 99"),
        (lambda d: d.pop("class_outcomes"), "incomplete"),
        (lambda d: d["counts"].update(total=1), "corrupted"),
        (lambda d: d.update(class_outcomes=[[1, 2, 3]]), "8 columns"),
        (lambda d: d.update(num_classes=7), "7 columns"),
    ],
)
def test_bad_documents_are_file_format_errors(comparison, edit, match):
    document = comparison.to_dict(instances=False)
    edit(document)
    with pytest.raises(FileFormatError, match=match):
        Comparison.from_dict(document)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileFormatError, match="No such file"):
        Comparison.from_json(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "flipless.comparison", ')
    with pytest.raises(FileFormatError, match="not a readable JSON"):
        Comparison.from_json(str(broken))
