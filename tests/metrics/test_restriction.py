"""compare(..., old_classes=...): flips counted only on examples whose label the old model knew."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from rich.console import Console

from flipless import Comparison, FileFormatError, InputError, compare
from flipless.metrics.display import summary_table

# 3 classes; the old model knows 0 and 1. Examples 2 and 5 are labelled 2, a new class.
LABELS = np.array([0, 1, 2, 0, 2, 1, 0])
OLD = np.array([0, 1, 0, 1, 1, 1, 0])  # right on 0, 1, 5, 6
NEW = np.array([0, 0, 2, 0, 2, 1, 1])  # right on 0, 2, 3, 4, 5
IDS = np.array([10, 11, 12, 13, 14, 15, 16])
NAMES = ["cat", "dog", "fish"]


def test_counts_by_hand_over_the_old_classes_only():
    restricted = compare(OLD, NEW, LABELS, ids=IDS, old_classes=[0, 1])
    # kept: examples 0, 1, 3, 5, 6 (labels 0, 1, 0, 1, 0)
    # old right: 0, 1, 5, 6; new right: 0, 3, 5
    # negative flips: 1 (old 1 → new 0), 6 (old 0 → new 1); positive flips: 3
    assert restricted.total == 5
    assert (restricted.negative_flips, restricted.positive_flips) == (2, 1)
    assert restricted.negative_flip_rate == 2 / 5
    assert restricted.positive_flip_rate == 1 / 5
    assert restricted.accuracy_old == 4 / 5 and restricted.accuracy_new == 3 / 5
    assert restricted.backward_trust_compatibility == 2 / 4  # both right: 0, 5
    assert restricted.negative_flip_ids().tolist() == [11, 16]
    assert restricted.positive_flip_ids().tolist() == [13]
    everything = compare(OLD, NEW, LABELS, ids=IDS)  # the fixed new-class examples 2, 4 dilute
    assert everything.negative_flip_rate == 2 / 7 and everything.positive_flip_rate == 3 / 7
    restriction = restricted.restriction
    assert restriction.old_classes == (0, 1) and restriction.num_classes == 3
    assert (restriction.excluded, restriction.total, restriction.kept) == (2, 7, 5)
    assert restriction.new_correct == 5 and restriction.accuracy_new_all == 5 / 7  # 0, 2–5
    assert everything.restriction is None
    # the new class keeps its row, with nothing counted in it
    assert restricted.per_class()["support"].tolist() == [3, 2, 0]


def test_names_indices_scores_and_slices_agree():
    scores = np.eye(3)[NEW] * 2.0 + 0.1
    by_name = compare(
        np.eye(3)[OLD],
        scores,
        LABELS,
        class_names=NAMES,
        slices={"site": ["a", "b", "a", "b", "a", "b", "a"]},
        old_classes=["dog", "cat"],
    )
    by_index = compare(OLD, NEW, LABELS, old_classes=(1, 0))
    np.testing.assert_array_equal(by_name.class_outcomes, by_index.class_outcomes)
    assert by_name.restriction == by_index.restriction
    top2 = compare(np.eye(3)[OLD], scores, LABELS, top_k=2, old_classes=[0, 1])
    assert top2.restriction.new_correct == 7  # every label is among two of the three scores
    site = by_name.per_slice("site")
    # site a: examples 0, 6 kept (2 and 4 are fish); b: 1, 3, 5
    assert site["support"].tolist() == [2, 3]
    assert site["negative_flips"].tolist() == [1, 1]
    assert by_name.instance_frame()["new_confidence"].shape == (5,)


def test_nothing_left_to_count_gives_nan_with_a_reason():
    only_new = compare([0, 1], [2, 2], [2, 2], num_classes=3, old_classes=[0, 1])
    assert only_new.total == 0 and math.isnan(only_new.negative_flip_rate)
    assert only_new.rate("negative_flip_rate").reason
    assert only_new.restriction.excluded == 2


@pytest.mark.parametrize(
    ("old_classes", "message"),
    [
        (["cat", "bird"], "'bird', which is not a class"),
        ([0, 3], r"class indices in \[0, 3\)"),
        ([], "empty"),
        ([1, 1], "repeats a class"),
        ("cat", "sequence of class indices or class names"),
        ([0.5], "expected a class index or name"),
    ],
)
def test_bad_old_classes(old_classes, message):
    with pytest.raises(InputError, match=message):
        compare(OLD, NEW, LABELS, class_names=NAMES, old_classes=old_classes)


def test_json_keeps_the_restriction_and_reads_old_documents(tmp_path):
    restricted = compare(OLD, NEW, LABELS, ids=IDS, class_names=NAMES, old_classes=["cat", "dog"])
    path = tmp_path / "c.json"
    restricted.to_json(str(path))
    document = json.loads(path.read_text())
    assert document["restriction"]["excluded"] == 2
    assert document["restriction"]["old_classes"] == [0, 1]
    back = Comparison.from_json(str(path))
    assert back.restriction == restricted.restriction
    assert back.negative_flip_rate == 2 / 5
    plain = compare(OLD, NEW, LABELS).to_dict()
    assert "restriction" not in plain  # documents of unrestricted comparisons are unchanged
    assert Comparison.from_dict(plain).restriction is None
    assert document["restriction"]["new_correct"] == 5
    document["restriction"]["new_correct"] = 8
    with pytest.raises(FileFormatError, match="got 8 of 7 examples right"):
        Comparison.from_dict(document)
    document["restriction"]["new_correct"] = None  # not recorded: unknown, not an error
    assert math.isnan(Comparison.from_dict(document).restriction.accuracy_new_all)
    document["restriction"]["excluded"] = 1  # 6 of 7 kept, but 5 counted
    with pytest.raises(FileFormatError, match="says 6 examples were counted but its counts hold 5"):
        Comparison.from_dict(document)
    del document["restriction"]["total"]
    with pytest.raises(FileFormatError, match="restriction"):
        Comparison.from_dict(document)


def test_the_summary_says_what_was_left_out():
    restricted = compare(OLD, NEW, LABELS, old_classes=[0, 1])
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(restricted))
    text = out.getvalue()
    assert "left out" in text
    assert "label not among the old model's 2 of 3 classes; rates count the other 5" in text
    assert "(new model on all: 71.43 %)" in text
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(compare(OLD, NEW, LABELS)))
    assert "left out" not in out.getvalue()
