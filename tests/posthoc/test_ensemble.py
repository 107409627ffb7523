"""Output ensembles of prediction files: each average checked against a hand computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flipless import compare
from flipless.errors import InputError, MismatchError
from flipless.io import PredictionTable, compare_files, read_predictions, write_predictions
from flipless.posthoc import ensemble, ensemble_files

LOG2, LOG3 = math.log(2.0), math.log(3.0)


def table(
    scores=None, predicted=None, ids=(1, 2), labels=None, names=None, source="m"
) -> PredictionTable:
    return PredictionTable(
        source=source,
        ids=np.asarray(ids, dtype=object if isinstance(ids[0], str) else np.int64),
        labels=None if labels is None else np.asarray(labels),
        predicted=None if predicted is None else np.asarray(predicted),
        scores=None if scores is None else np.asarray(scores, dtype=np.float64),
        class_names=None if names is None else tuple(names),
        extra=pd.DataFrame(index=pd.RangeIndex(len(ids))),
    )


def test_probabilities_average_softmaxes_logits_and_keeps_probabilities() -> None:
    probabilities = table([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], labels=[1, 0], source="a")
    # softmax([0, ln 3, 0]) = [1/5, 3/5, 1/5]; softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]
    logits = table([[0.0, LOG3, 0.0], [0.0, 0.0, LOG2]], source="b")

    result = ensemble([probabilities, logits], "probabilities", weights=[1, 3])

    # By hand, W = 4: row 0 (0.6 + 3·0.2, 0.3 + 3·0.6, 0.1 + 3·0.2) / 4; row 1 likewise.
    expected = [[0.3, 0.525, 0.175], [0.2375, 0.3125, 0.45]]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-14, atol=0)
    assert result.predicted.tolist() == [1, 2]
    assert result.scores_kind == "probabilities"
    assert result.labels.tolist() == [1, 0]  # from the file that has them
    assert result.weights == (1.0, 3.0)


def test_logits_average_is_the_weighted_mean_of_the_logits() -> None:
    first = table([[1.0, 2.0, 0.0], [3.0, -1.0, 0.5]])
    second = table([[2.0, 0.0, 1.0], [0.0, 4.0, 0.5]])

    result = ensemble([first, second], "logits", weights=[1, 2])

    # (z_a + 2 z_b) / 3 = [5/3, 2/3, 2/3] and [1, 7/3, 1/2]
    np.testing.assert_allclose(result.scores, [[5 / 3, 2 / 3, 2 / 3], [1, 7 / 3, 0.5]], rtol=1e-15)
    assert result.predicted.tolist() == [0, 1]
    assert result.scores_kind == "logits" and result.labels is None


def test_a_vote_ties_are_broken_by_the_mean_probability_then_the_lowest_class() -> None:
    ids = (1, 2, 3, 4)
    first = table([[0.7, 0.3], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], ids=ids)
    second = table([[0.2, 0.8], [0.4, 0.6], [0.4, 0.6], [0.1, 0.9]], ids=ids)

    result = ensemble([first, second], "vote")

    # Votes 1–1 in rows 0–2: mean probabilities [0.45, 0.55] → 1, [0.65, 0.35] → 0,
    # [0.5, 0.5] → the lower class 0; row 3: both vote 1.
    assert result.predicted.tolist() == [1, 0, 0, 1]
    assert result.scores is None and result.scores_kind is None


def test_a_vote_counts_weights_and_ties_within_rounding() -> None:
    ids = (1, 2)
    # 0.1 + 0.2 = 0.30000000000000004 against 0.3: a tie, decided by the mean probability.
    members = [
        table([[0.6, 0.4], [0.9, 0.1]], ids=ids, source="a"),
        table([[0.6, 0.4], [0.9, 0.1]], ids=ids, source="b"),
        table([[0.01, 0.99], [0.45, 0.55]], ids=ids, source="c"),
    ]

    result = ensemble(members, "vote", weights=[0.1, 0.2, 0.3])

    # Mean probability of class 1, W = 0.6: row 0 (0.04 + 0.08 + 0.297) / 0.6 = 0.695 > 0.305;
    # row 1 (0.01 + 0.02 + 0.165) / 0.6 = 0.325 < 0.675.
    assert result.predicted.tolist() == [1, 0]
    assert ensemble(members, "vote", weights=[0.1, 0.2, 0.25]).predicted.tolist() == [0, 0]


def test_a_vote_takes_members_with_only_predicted_labels() -> None:
    names = ("cat", "dog", "owl")
    labels_only = table(predicted=np.array(["owl", "dog"], dtype=object), source="a")
    scored = table([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], names=names, source="b")
    third = table(predicted=np.array(["owl", "cat"], dtype=object), source="c")

    result = ensemble([labels_only, scored, third], "vote")

    # Row 0: owl, cat, owl → owl. Row 1: dog, owl, cat: a 3-way tie, broken by the only
    # scored member's probabilities (owl 0.8).
    assert result.predicted.tolist() == [2, 2]
    assert result.class_names == names


def names(*values: str) -> np.ndarray:
    return np.array(values, dtype=object)


def test_a_vote_of_class_names_alone_names_the_classes_in_sorted_order(tmp_path: Path) -> None:
    ids = ("x", "y", "z")
    members = [
        table(predicted=names("owl", "cat", "dog"), ids=ids, labels=names("owl", "dog", "dog")),
        table(predicted=names("owl", "dog", "cat"), ids=ids),
        table(predicted=names("cat", "dog", "cat"), ids=ids),
    ]

    result = ensemble(members, "vote")

    assert result.class_names == ("cat", "dog", "owl")
    # owl owl cat → owl; cat dog dog → dog; dog cat cat → cat
    assert result.predicted.tolist() == [2, 1, 0]
    assert result.labels.tolist() == [2, 1, 1]
    back = read_predictions(result.write(tmp_path / "vote.csv"))
    assert back.scores is None and back.class_names == ("cat", "dog", "owl")
    assert back.ids.tolist() == ["x", "y", "z"] and back.predicted.tolist() == [2, 1, 0]


def test_files_join_by_id_and_the_ensemble_compares_like_the_arrays(tmp_path: Path) -> None:
    names = ("a", "b", "c")
    labels = np.array([0, 2, 1, 1])
    old = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [1.0, 0.5, 0.0], [0.0, 2.0, 1.0]])
    new = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.5], [0.0, 3.0, 1.0], [2.0, 0.0, 1.5]])
    ids = np.array([7, 3, 9, 1])
    write_predictions(
        tmp_path / "old.csv", ids, old.argmax(1), labels=labels, scores=old, class_names=names
    )
    order = [2, 0, 3, 1]  # the new file lists the samples in another order
    write_predictions(
        tmp_path / "new.jsonl",
        ids[order],
        new[order].argmax(1),
        scores=new[order],
        class_names=names,
    )

    result = ensemble_files([tmp_path / "old.csv", tmp_path / "new.jsonl"])
    result.write(tmp_path / "ensemble.parquet")

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    mean = (softmax(old) + softmax(new)) / 2
    np.testing.assert_allclose(result.scores, mean, rtol=1e-14)
    assert result.ids.tolist() == ids.tolist()
    back = read_predictions(tmp_path / "ensemble.parquet")
    assert back.class_names == names and back.labels.tolist() == labels.tolist()
    from_files = compare_files(tmp_path / "old.csv", tmp_path / "ensemble.parquet")
    in_memory = compare(old, mean, labels, ids=ids, class_names=list(names))
    assert from_files.to_dict() == in_memory.to_dict()


@pytest.mark.parametrize(
    ("members", "options", "error", "message"),
    [
        ([table([[1.0, 0.0]])], {}, InputError, "at least two prediction files; got 1"),
        ([table([[1.0, 0.0]])] * 2, {"average": "median"}, InputError, "average='median'"),
        ([table([[1.0, 0.0]])] * 2, {"weights": [1]}, InputError, r"1 weight\(s\) for 2"),
        ([table([[1.0, 0.0]])] * 2, {"weights": [1, -2]}, InputError, r"weights -2; expected"),
        (
            [table([[1.0, 0.0], [0.0, 1.0]]), table([[1.0, 0.0], [0.0, 1.0]], ids=(1, 5))],
            {},
            MismatchError,
            r"1 only in m \(2\) and 1 only in m \(5\)",
        ),
        (
            [table([[1.0, 0.0]] * 2, names="xy"), table([[1.0, 0.0]] * 2, names="yx")],
            {},
            MismatchError,
            "one label space in one order",
        ),
        (
            [table([[1.0, 0.0]] * 2), table([[1.0, 0.0, 2.0]] * 2)],
            {},
            MismatchError,
            "different numbers of classes",
        ),
        (
            [table([[1.0, 0.0]] * 2, labels=[0, 1]), table([[1.0, 0.0]] * 2, labels=[0, 0])],
            {},
            MismatchError,
            r"disagree on the true label of 1 sample\(s\) \(ids 2\)",
        ),
        (
            [table([[0.3, 0.7]] * 2, source="p.csv"), table([[2.0, 0.0]] * 2)],
            {"average": "logits"},
            InputError,
            r"p\.csv hold\(s\) probabilities",
        ),
        (
            [table(predicted=[0, 1], source="l.csv"), table([[1.0, 0.0]] * 2)],
            {},
            InputError,
            r"l\.csv hold\(s\) only predicted labels.*--average vote",
        ),
        (
            [table(predicted=[0, 5]), table([[1.0, 0.0]] * 2)],
            {"average": "vote"},
            InputError,
            r"predicts class indices 5, outside the 2 classes",
        ),
        (
            [table([[1.0, 0.0]] * 2, ids=(1, 1)), table([[1.0, 0.0]] * 2)],
            {},
            InputError,
            r"1 id\(s\) on more than one row",
        ),
    ],
)
def test_bad_members_are_refused_with_a_reason(members, options, error, message) -> None:
    with pytest.raises(error, match=message):
        ensemble(members, **options)
