"""Tests of flipless.data.labeled: LabeledData and stratified_split."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flipless.data.labeled import LabeledData, check_fraction, stratified_split
from flipless.errors import InputError


def images(n: int = 6) -> LabeledData:
    inputs = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)
    labels = torch.tensor([k % 3 for k in range(n)], dtype=torch.int64)
    ids = torch.arange(100, 100 + n, dtype=torch.int64)
    return LabeledData(inputs, labels, ids, ("a", "b", "c"), "toy")


def texts() -> LabeledData:
    return LabeledData.from_arrays(["x", "yy", "zzz"], [0, 1, 0], ids=[7, 3, 5], name="t")


def by_class(labels: list[int]) -> LabeledData:
    """Input = position, id = 10 · position, so a subset's rows can be traced back."""
    n = len(labels)
    return LabeledData.from_arrays(
        np.arange(n, dtype=np.float32)[:, None], labels, np.arange(n) * 10
    )


# --------------------------------------------------------------------------- construction


def test_fields_length_and_num_classes() -> None:
    data = images()
    assert len(data) == 6
    assert data.num_classes == 3
    assert not data.is_text
    assert data.class_counts().tolist() == [2, 2, 2]
    assert "toy" in repr(data) and "6 samples" in repr(data)


def test_getitem_returns_a_dict_and_default_collate_makes_a_dict_batch() -> None:
    data = images()
    item = data[4]
    assert torch.equal(item["inputs"], torch.tensor([[[16.0, 17.0], [18.0, 19.0]]]))
    assert item["labels"].item() == 1 and item["ids"].item() == 104
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["inputs"].shape == (4, 1, 2, 2) and batch["inputs"].dtype == torch.float32
    assert batch["labels"].tolist() == [0, 1, 2, 0]
    assert batch["ids"].tolist() == [100, 101, 102, 103]


def test_texts_collate_to_a_list_of_strings() -> None:
    data = texts()
    assert data.is_text and data[1]["inputs"] == "yy"
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch["inputs"] == ["x", "yy", "zzz"]
    assert batch["ids"].tolist() == [7, 3, 5]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"inputs": torch.zeros(6, 2, dtype=torch.int64)}, "expected a floating tensor"),
        ({"inputs": np.zeros((6, 2), dtype=np.float32)}, "inputs is ndarray"),
        ({"inputs": ["a", 1, "c", "d", "e", "f"]}, r"non-string items at positions 1"),
        ({"labels": torch.zeros(6, dtype=torch.int32)}, "labels is torch.int32"),
        (
            {"labels": torch.zeros(5, dtype=torch.int64)},
            r"labels has shape \(5,\); expected \(6,\)",
        ),
        ({"ids": [0, 1, 2, 3, 4, 5]}, "ids is list"),
        ({"labels": torch.tensor([0, 1, 2, 3, 0, -1])}, r"positions 3, 5 are 3, -1.*\[0, 3\)"),
        ({"ids": torch.tensor([1, 2, 3, 2, 1, 9])}, r"2 id\(s\) appear more than once \(1, 2\)"),
        ({"class_names": ["a", "b", "c"]}, "expected a tuple of strings"),
        ({"class_names": ()}, "class_names is empty"),
        ({"class_names": ("a", "b", "a")}, "class_names repeats 'a'"),
        ({"name": 3}, "name is int"),
        ({"ids": torch.arange(6, device="meta")}, "ids on meta; expected CPU tensors"),
    ],
)
def test_construction_checks(change: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        replace(images(), **change)


def test_empty_data_is_allowed() -> None:
    empty = images().subset([])
    assert len(empty) == 0 and empty.inputs.shape == (0, 1, 2, 2)


# --------------------------------------------------------------------------- from_arrays


def test_from_arrays_converts_numpy_and_defaults_ids_and_class_names() -> None:
    data = LabeledData.from_arrays(np.ones((4, 3), dtype=np.uint8) * 7, np.array([0, 4, 2, 2]))
    assert data.inputs.dtype == torch.float32 and float(data.inputs.max()) == 7.0  # not scaled
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 4, 2, 2]
    assert data.ids.tolist() == [0, 1, 2, 3]
    assert data.class_names == ("0", "1", "2", "3", "4")
    assert data.name == "arrays"


def test_from_arrays_accepts_tensors_float_labels_and_string_arrays() -> None:
    data = LabeledData.from_arrays(
        torch.zeros(3, 2, dtype=torch.float64),
        torch.tensor([1.0, 0.0, 1.0]),
        ids=[9, 8, 7],
        class_names=["no", "yes"],
        name="n",
    )
    assert data.labels.tolist() == [1, 0, 1] and data.ids.tolist() == [9, 8, 7]
    assert data.class_names == ("no", "yes") and data.inputs.dtype == torch.float32
    words = LabeledData.from_arrays(np.array(["ab", "c"]), [0, 0])
    assert words.inputs == ["ab", "c"] and words.class_names == ("0",)


@pytest.mark.parametrize(
    ("inputs", "labels", "ids", "match"),
    [
        (np.zeros((2, 1)), [0.5, 1.0], None, r"labels holds non-integer values at positions 0"),
        (np.zeros((2, 1)), [0, 1], [0.0, float("nan")], r"ids holds non-integer"),
        (np.zeros((2, 1)), [True, False], None, "labels is boolean"),
        (np.zeros((2, 1)), ["a", "b"], None, "labels has dtype <U1; expected integers"),
        (np.zeros((2, 1)), [[0, 1]], None, r"labels has shape \(1, 2\); expected a 1-D"),
        (np.zeros((3, 1)), [0, 1], None, r"labels has shape \(2,\); expected \(3,\)"),
        (np.array(5.0), [0], None, "inputs is a scalar"),
        (np.zeros((2, 1)), [0, 0], [4, 4], r"1 id\(s\) appear more than once \(4\)"),
    ],
)
def test_from_arrays_errors(inputs, labels, ids, match: str) -> None:
    with pytest.raises(InputError, match=match):
        LabeledData.from_arrays(inputs, labels, ids=ids)


def test_from_arrays_needs_class_names_when_there_are_no_labels() -> None:
    with pytest.raises(InputError, match="pass class_names"):
        LabeledData.from_arrays(np.zeros((0, 2)), [])
    assert len(LabeledData.from_arrays(np.zeros((0, 2)), [], class_names=["a"])) == 0
    no_texts = LabeledData.from_arrays([], [], class_names=["a"])
    assert no_texts.inputs == [] and no_texts.is_text


def test_from_arrays_label_beyond_given_class_names() -> None:
    with pytest.raises(InputError, match=r"labels at positions 1 are 2; expected .*\[0, 2\)"):
        LabeledData.from_arrays(np.zeros((2, 1)), [1, 2], class_names=["a", "b"])


# --------------------------------------------------------------------------- subset


def test_subset_keeps_order_class_names_and_optionally_renames() -> None:
    data = images()
    part = data.subset(np.array([5, 0, -2]))
    assert part.ids.tolist() == [105, 100, 104]
    assert part.labels.tolist() == [2, 0, 1]
    assert torch.equal(part.inputs[1], data.inputs[0])
    assert part.class_names == data.class_names and part.name == "toy"
    assert data.subset(torch.tensor([1]), name="one").name == "one"


def test_subset_of_texts() -> None:
    assert texts().subset([2, 0]).inputs == ["zzz", "x"]


def test_subset_errors() -> None:
    with pytest.raises(InputError, match=r"subset indices 6, -7 are outside \[0, 6\)"):
        images().subset([0, 6, -7])
    with pytest.raises(InputError, match="subset indices repeat positions 5; expected each"):
        images().subset([5, 0, -1])
    with pytest.raises(InputError, match=r"boolean.*flatnonzero"):
        images().subset(np.ones(6, dtype=bool))


# --------------------------------------------------------------------------- stratified_split


def test_stratified_split_counts_per_class_by_hand() -> None:
    # class sizes 10, 5, 2, 1: with fraction 0.3, round-half-up gives 3, 1.5→2, 0.6→1, 0.3→0;
    # class 2 (2 samples) is clamped to [1, 1]; class 3 (1 sample) goes to rest.
    labels = [0] * 10 + [1] * 5 + [2] * 2 + [3]
    part, rest = stratified_split(by_class(labels), 0.3, seed=4)
    assert part.class_counts().tolist() == [3, 2, 1, 0]
    assert rest.class_counts().tolist() == [7, 3, 1, 1]


def test_stratified_split_clamps_so_both_parts_see_every_class() -> None:
    labels = [0] * 3 + [1] * 3
    small, big = stratified_split(by_class(labels), 0.01, seed=0)  # 0.03 rounds to 0 → 1
    assert small.class_counts().tolist() == [1, 1] and big.class_counts().tolist() == [2, 2]
    big, small = stratified_split(by_class(labels), 0.99, seed=0)  # 2.97 rounds to 3 → 2
    assert big.class_counts().tolist() == [2, 2] and small.class_counts().tolist() == [1, 1]


def test_stratified_split_single_sample_class_follows_half() -> None:
    part, rest = stratified_split(by_class([0, 0, 1]), 0.5, seed=0)
    assert part.class_counts().tolist() == [1, 1] and rest.class_counts().tolist() == [1, 0]


def test_stratified_split_fraction_one_keeps_everything() -> None:
    data = by_class([0, 1, 1, 2])
    part, rest = stratified_split(data, 1.0, seed=3)
    assert part.ids.tolist() == data.ids.tolist() and len(rest) == 0


def test_stratified_split_is_a_partition_in_original_order_and_seeded() -> None:
    labels = [k % 4 for k in range(40)]
    data = by_class(labels)
    part, rest = stratified_split(data, 0.25, seed=11)
    both = np.concatenate([part.ids.numpy(), rest.ids.numpy()])
    assert sorted(both.tolist()) == data.ids.tolist()
    assert np.all(np.diff(part.ids.numpy()) > 0) and np.all(np.diff(rest.ids.numpy()) > 0)
    again, _ = stratified_split(data, 0.25, seed=11)
    assert again.ids.tolist() == part.ids.tolist()
    other_seeds = {tuple(stratified_split(data, 0.25, seed=s)[0].ids.tolist()) for s in range(5)}
    assert len(other_seeds) > 1
    # the inputs travel with their ids (input value = position = id / 10)
    assert torch.equal(part.inputs[:, 0], part.ids.float() / 10)


def test_stratified_split_matches_a_reference_permutation() -> None:
    """Independent re-statement of the documented draw: one permutation per class, in order."""
    labels = np.array([1, 0, 1, 2, 0, 1, 2, 0, 1, 1])
    part, _ = stratified_split(by_class(labels.tolist()), 0.4, seed=5)
    # fraction 0.4: class 0 (3 samples) 1.2→1, class 1 (5) 2.0→2, class 2 (2) 0.8→1
    rng = np.random.default_rng(5)
    expected = []
    for label, take in ((0, 1), (1, 2), (2, 1)):
        expected.extend(rng.permutation(np.flatnonzero(labels == label))[:take].tolist())
    assert part.ids.tolist() == sorted(10 * p for p in expected)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_stratified_split_rejects_fractions_outside_0_1(fraction) -> None:
    with pytest.raises(InputError, match=r"fraction=.*expected a number in \(0, 1\]"):
        stratified_split(images(), fraction, seed=0)


def test_stratified_split_rejects_a_non_integer_seed() -> None:
    with pytest.raises(InputError, match=r"seed is 0\.5; expected an integer"):
        stratified_split(images(), 0.5, seed=0.5)


def test_check_fraction_open_interval() -> None:
    assert check_fraction(1, "f") == 1.0
    with pytest.raises(InputError, match=r"f=1; expected a number in \(0, 1\)"):
        check_fraction(1, "f", allow_one=False)
