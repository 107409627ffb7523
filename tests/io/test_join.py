"""join_by_id and compare_files: rows meet by id, and every disagreement between files is caught."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flipless.errors import InputError, MismatchError
from flipless.io import compare_files, join_by_id, read_predictions
from flipless.io.join import sorted_unique
from flipless.io.readers import PredictionTable
from flipless.metrics.comparison import compare

NUM_CLASSES = 4


def make_models(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models' logits; each row is a permutation of distinct values (no ties)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size)
    old = np.array([rng.permutation(NUM_CLASSES) for _ in range(size)]) * 0.5 - 1.0
    new = np.array([rng.permutation(NUM_CLASSES) for _ in range(size)]) * 0.25
    return labels, old, new


def expected_counts(labels: np.ndarray, old_pred: np.ndarray, new_pred: np.ndarray) -> dict:
    """Negative flips counted directly from the definition, independently of flipless."""
    broken = (old_pred == labels) & (new_pred != labels)
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (old_pred[broken], new_pred[broken]), 1)
    return {
        "broken": broken,
        "matrix": matrix,
        "per_class": np.bincount(labels[broken], minlength=NUM_CLASSES),
        "support": np.bincount(labels, minlength=NUM_CLASSES),
    }


def write_csv_logits(path: Path, ids, labels, logits, **extra) -> Path:
    frame = pd.DataFrame({"id": ids, "label": labels, **extra})
    for k in range(logits.shape[1]):
        frame[f"logit_{k}"] = logits[:, k]
    frame.to_csv(path, index=False)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_small_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Matching by id --------------------------------------------------------------------------------
def test_shuffled_files_match_the_aligned_comparison(tmp_path: Path) -> None:
    size = 40
    labels, old_logits, new_logits = make_models(size)
    ids = np.arange(100, 100 + size)
    domain = np.where(ids % 3 == 0, "news", "chat")
    rng = np.random.default_rng(1)
    old_order, new_order = rng.permutation(size), rng.permutation(size)
    old_path = write_csv_logits(
        tmp_path / "old.csv",
        ids[old_order],
        labels[old_order],
        old_logits[old_order],
        domain=domain[old_order],
    )
    new_path = write_jsonl(
        tmp_path / "new.jsonl",
        [
            {"id": int(ids[i]), "label": int(labels[i]), "logits": new_logits[i].tolist()}
            for i in new_order
        ],
    )

    result = compare_files(old_path, new_path, slices=["domain"])

    expected = expected_counts(labels, old_logits.argmax(1), new_logits.argmax(1))
    np.testing.assert_array_equal(result.flip_matrix, expected["matrix"])
    per_class = result.per_class()
    np.testing.assert_array_equal(per_class["negative_flips"], expected["per_class"])
    np.testing.assert_array_equal(per_class["support"], expected["support"])
    assert result.negative_flips == expected["broken"].sum()
    assert set(result.negative_flip_ids().tolist()) == set(ids[expected["broken"]].tolist())
    for group in ("news", "chat"):
        in_group = domain == group
        counts = result.slices["domain"].counts(group)
        assert counts.negative_flips == (expected["broken"] & in_group).sum()
        assert counts.total == in_group.sum()

    aligned = compare(old_logits, new_logits, labels)
    np.testing.assert_array_equal(result.class_outcomes, aligned.class_outcomes)
    np.testing.assert_array_equal(result.flip_matrix, aligned.flip_matrix)


def test_join_keeps_the_old_order_and_matches_rows_by_id(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n5,1,1\n2,0,1\n9,2,2\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,label,pred\n9,2,0\n5,1,2\n2,0,0\n")

    joined = join_by_id(read_predictions(old_path), read_predictions(new_path))

    assert joined.ids.tolist() == [5, 2, 9]
    assert joined.labels.tolist() == [1, 0, 2]
    assert joined.old.tolist() == [1, 1, 2]
    assert joined.new.tolist() == [2, 0, 0]
    assert joined.labels.dtype == np.int64
    assert (joined.dropped_old, joined.dropped_new) == (0, 0)


def test_integer_ids_match_integer_text_ids(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,0,0\n2,1,1\n")
    new_path = write_jsonl(tmp_path / "new.jsonl", [{"id": "2", "pred": 0}, {"id": "1", "pred": 0}])
    joined = join_by_id(read_predictions(old_path), read_predictions(new_path))
    assert joined.ids.tolist() == [1, 2]
    assert joined.new.tolist() == [0, 0]


def test_result_files_join_by_row_number(tmp_path: Path) -> None:
    labels, old_logits, new_logits = make_models(30, seed=3)
    for name, logits in (("old", old_logits), ("new", new_logits)):
        outputs = torch.tensor(logits, dtype=torch.float32)
        record = {"pred": outputs.argmax(1), "gt": torch.tensor(labels), "outputs": outputs}
        torch.save(record, tmp_path / f"{name}.result")

    result = compare_files(tmp_path / "old.result", tmp_path / "new.result")

    expected = expected_counts(labels, old_logits.argmax(1), new_logits.argmax(1))
    assert result.negative_flips == expected["broken"].sum()
    assert result.negative_flip_ids().tolist() == np.flatnonzero(expected["broken"]).tolist()


# Missing and repeated ids ---------------------------------------------------------------------
def _files_with_ids(tmp_path: Path, old_ids: list, new_ids: list) -> tuple[Path, Path]:
    old = "id,label,pred\n" + "".join(f"{i},{i % 2},{i % 3 % 2}\n" for i in old_ids)
    new = "id,label,pred\n" + "".join(f"{i},{i % 2},1\n" for i in new_ids)
    return write_small_csv(tmp_path / "old.csv", old), write_small_csv(tmp_path / "new.csv", new)


def test_exact_join_names_the_missing_ids(tmp_path: Path) -> None:
    old_path, new_path = _files_with_ids(tmp_path, list(range(10)), [*range(8), 20, 21, 22])
    with pytest.raises(MismatchError) as info:
        compare_files(old_path, new_path)
    message = str(info.value)
    assert "2 only in the old file" in message and "(8, 9)" in message
    assert "3 only in the new file" in message and "(20, 21, 22)" in message
    assert "--inner-join" in message and "8 ids they share" in message


def test_inner_join_drops_the_ids_in_one_file(tmp_path: Path) -> None:
    old_path, new_path = _files_with_ids(tmp_path, list(range(10)), [*range(8), 20, 21, 22])

    joined = join_by_id(read_predictions(old_path), read_predictions(new_path), how="inner")
    result = compare_files(old_path, new_path, how="inner")

    assert joined.ids.tolist() == list(range(8))
    assert (joined.dropped_old, joined.dropped_new) == (2, 3)
    shared = np.arange(8)
    labels, old_pred, new_pred = shared % 2, shared % 3 % 2, np.ones(8, dtype=int)
    broken = (old_pred == labels) & (new_pred != labels)
    assert result.counts.total == 8
    assert result.negative_flip_ids().tolist() == shared[broken].tolist()


def test_inner_join_without_common_ids(tmp_path: Path) -> None:
    old_path, new_path = _files_with_ids(tmp_path, [1, 2], [3, 4])
    with pytest.raises(MismatchError, match=r"share no ids \(old: 1, 2; new: 3, 4\)"):
        compare_files(old_path, new_path, how="inner")


def test_repeated_ids(tmp_path: Path) -> None:
    old_path, new_path = _files_with_ids(tmp_path, [1, 3, 3, 5, 5, 5], [1, 3, 5])
    with pytest.raises(InputError, match=r"2 id\(s\) on more than one row \(3, 5\)"):
        compare_files(old_path, new_path)


def test_unknown_join_mode(tmp_path: Path) -> None:
    old_path, new_path = _files_with_ids(tmp_path, [1], [1])
    with pytest.raises(InputError, match="how='outer'"):
        compare_files(old_path, new_path, how="outer")


# Labels and classes ---------------------------------------------------------------------------
def test_disagreeing_labels_name_the_ids(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,0,0\n2,1,1\n4,2,2\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,label,pred\n4,1,2\n2,1,1\n1,2,0\n")
    with pytest.raises(MismatchError) as info:
        compare_files(old_path, new_path)
    message = str(info.value)
    assert "disagree on the true label of 2 of 3 sample(s) (ids 1, 4" in message
    assert "says 0, 2" in message and "says 2, 1" in message


def test_labels_may_come_from_one_file(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,0,0\n2,1,1\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,pred\n2,0\n1,0\n")
    joined = join_by_id(read_predictions(old_path), read_predictions(new_path))
    assert joined.labels.tolist() == [0, 1]
    reverse = join_by_id(read_predictions(new_path), read_predictions(old_path))
    assert reverse.labels.tolist() == [1, 0]


def test_no_labels_in_either_file(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,pred\n1,0\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,pred\n1,1\n")
    with pytest.raises(InputError, match=r"has true labels.*--label-col"):
        compare_files(old_path, new_path)


def test_text_labels_are_encoded_the_same_way_in_both_files(tmp_path: Path) -> None:
    ids = ["u1", "u2", "u3", "u4", "u5"]
    truth = ["weather", "alarm", "music", "alarm", "weather"]
    old_said = ["weather", "alarm", "alarm", "music", "weather"]
    new_said = ["zebra", "alarm", "music", "music", "alarm"]  # "zebra" only in the new file
    old_path = write_small_csv(
        tmp_path / "old.csv",
        "id,label,pred\n"
        + "".join(f"{i},{y},{p}\n" for i, y, p in zip(ids, truth, old_said, strict=True)),
    )
    new_rows = [
        {"id": i, "label": y, "prediction": p} for i, y, p in zip(ids, truth, new_said, strict=True)
    ]
    new_path = write_jsonl(tmp_path / "new.jsonl", new_rows[::-1])

    joined = join_by_id(read_predictions(old_path), read_predictions(new_path))
    result = compare_files(old_path, new_path)

    vocabulary = ["alarm", "music", "weather", "zebra"]
    assert joined.class_names == tuple(vocabulary)
    assert joined.labels.tolist() == [vocabulary.index(y) for y in truth]
    assert joined.old.tolist() == [vocabulary.index(p) for p in old_said]
    assert joined.new.tolist() == [vocabulary.index(p) for p in new_said]
    broken = [o == y != n for y, o, n in zip(truth, old_said, new_said, strict=True)]
    assert result.negative_flip_ids().tolist() == [i for i, b in zip(ids, broken, strict=True) if b]
    assert result.class_names == tuple(vocabulary)


def test_declared_class_names_order_the_indices(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,b,a\n2,c,c\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,label,pred\n1,b,b\n2,c,a\n")
    old = read_predictions(old_path, class_names=["c", "b", "a"])
    new = read_predictions(new_path, class_names=["c", "b", "a"])
    joined = join_by_id(old, new)
    assert joined.labels.tolist() == [1, 0]
    assert joined.old.tolist() == [2, 0]
    assert joined.new.tolist() == [1, 2]


def test_names_outside_the_declared_classes(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,a,a\n2,b,d\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,pred\n1,a\n2,b\n")
    with pytest.raises(InputError, match=r"predictions of the old file .* 1 name\(s\) .*\('d'\)"):
        compare_files(old_path, new_path, class_names=["a", "b", "c"])


def test_text_labels_with_unnamed_scores(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,logit_0,logit_1\n1,cat,0.1,0.2\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,label,logit_0,logit_1\n1,cat,0.3,0.2\n")
    with pytest.raises(InputError, match=r"class names but a model gave scores.*class_names="):
        compare_files(old_path, new_path)


def test_text_in_one_file_and_indices_in_the_other(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,cat,dog\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,pred\n1,0\n")
    with pytest.raises(MismatchError, match=r"are class names but .* are class indices"):
        compare_files(old_path, new_path)


def test_different_class_sets(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,a,b\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,label,pred\n1,a,d\n")
    (tmp_path / "old.csv.classes.json").write_text('["a", "b", "c"]')
    (tmp_path / "new.csv.classes.json").write_text('["a", "b", "d"]')
    with pytest.raises(MismatchError) as info:
        compare_files(old_path, new_path)
    message = str(info.value)
    assert "different classes: 1 only in the old file" in message and "('c')" in message
    assert "1 only in the new file" in message and "('d')" in message


def test_same_classes_in_another_order(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,a,b\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,label,pred\n1,a,a\n")
    (tmp_path / "old.csv.classes.json").write_text('["a", "b"]')
    (tmp_path / "new.csv.classes.json").write_text('["b", "a"]')
    with pytest.raises(MismatchError, match=r"different order \(class 0 is 'a' in .* but 'b'"):
        compare_files(old_path, new_path)


def test_scores_of_different_widths(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,logit_0,logit_1\n1,0,0.1,0.2\n")
    new_path = write_small_csv(
        tmp_path / "new.csv", "id,label,logit_0,logit_1,logit_2\n1,0,0.3,0.2,0.1\n"
    )
    with pytest.raises(MismatchError, match=r"different widths .*has 2 and .*has 3 columns"):
        compare_files(old_path, new_path)


def test_class_names_of_one_file_against_the_scores_of_the_other(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred\n1,0,1\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,logit_0,logit_1\n1,0.3,0.2\n")
    (tmp_path / "old.csv.classes.json").write_text('["a", "b", "c"]')
    with pytest.raises(MismatchError, match=r"new file .* has 2 scores per row but .* 3 class"):
        compare_files(old_path, new_path)


# Slices ---------------------------------------------------------------------------------------
def test_slices_come_from_either_file(tmp_path: Path) -> None:
    old_path = write_small_csv(
        tmp_path / "old.csv", "id,label,pred,domain\n1,0,0,a\n2,1,1,b\n3,1,1,a\n4,0,0,b\n"
    )
    new_path = write_small_csv(
        tmp_path / "new.csv", "id,pred,domain,lang\n4,1,b,en\n3,0,a,de\n2,1,b,de\n1,0,a,en\n"
    )
    result = compare_files(old_path, new_path, slices=["domain", "lang", "domain"])

    # Broken: ids 3 (domain a, de) and 4 (domain b, en).
    assert list(result.slices) == ["domain", "lang"]
    for name, group, broken, total in [
        ("domain", "a", 1, 2),
        ("domain", "b", 1, 2),
        ("lang", "de", 1, 2),
        ("lang", "en", 1, 2),
    ]:
        counts = result.slices[name].counts(group)
        assert (counts.negative_flips, counts.total) == (broken, total)


def test_unknown_slice_column_lists_the_columns(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred,domain\n1,0,0,a\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,pred,lang\n1,1,en\n")
    with pytest.raises(InputError, match=r"No column 'region' .* are 'domain', 'lang'"):
        compare_files(old_path, new_path, slices=["region"])


def test_slice_column_that_differs_between_files(tmp_path: Path) -> None:
    old_path = write_small_csv(tmp_path / "old.csv", "id,label,pred,domain\n1,0,0,a\n2,0,0,b\n")
    new_path = write_small_csv(tmp_path / "new.csv", "id,pred,domain\n2,1,c\n1,1,a\n")
    with pytest.raises(MismatchError, match=r"'domain' but it differs on 1 of 2 .*ids 2: old 'b'"):
        compare_files(old_path, new_path)


# The sort-based matching, on hand-made tables ---------------------------------------------------
def table(ids, labels=None, predicted=None, source="t") -> PredictionTable:
    ids = np.asarray(ids, dtype=object if isinstance(ids[0], str) else np.int64)
    size = ids.shape[0]
    labels = np.zeros(size, dtype=np.int64) if labels is None else np.asarray(labels)
    predicted = np.zeros(size, dtype=np.int64) if predicted is None else np.asarray(predicted)
    return PredictionTable(
        source, ids, labels, predicted, None, None, pd.DataFrame(index=range(size))
    )


@pytest.mark.parametrize(
    ("old_ids", "new_ids"),
    [
        ([5, 3, 9, 1], [1, 9, 5, 3]),  # int ids, shuffled differently
        (["d", "b", "a", "c"], ["a", "c", "d", "b"]),  # text ids
        ([-2, 10**15, 0, 7], [7, 0, -2, 10**15]),  # negative and large ids
    ],
)
def test_exact_join_pairs_each_old_row_with_the_new_row_of_its_id(old_ids, new_ids) -> None:
    new_predicted = np.arange(4) + 10  # row r of the new file predicts 10 + r
    joined = join_by_id(table(old_ids), table(new_ids, predicted=new_predicted))
    assert joined.ids.tolist() == old_ids  # the old file's order
    expected = [10 + new_ids.index(i) for i in old_ids]  # by hand: the new row with that id
    assert joined.new.tolist() == expected
    assert (joined.dropped_old, joined.dropped_new) == (0, 0)


@pytest.mark.parametrize("ids", [[4, 2, 7, 1, 9], ["e", "b", "x", "a", "q"]])
def test_inner_join_keeps_the_shared_ids_in_the_old_order(ids) -> None:
    old_ids = [ids[0], ids[1], ids[2], ids[3]]  # ids[2] only in old
    new_ids = [ids[3], ids[4], ids[0], ids[1]]  # ids[4] only in new
    joined = join_by_id(
        table(old_ids, predicted=[0, 1, 2, 3]),
        table(new_ids, predicted=[10, 11, 12, 13]),
        how="inner",
    )
    assert joined.ids.tolist() == [ids[0], ids[1], ids[3]]
    assert joined.old.tolist() == [0, 1, 3]
    assert joined.new.tolist() == [12, 13, 10]
    assert (joined.dropped_old, joined.dropped_new) == (1, 1)


def test_ids_missing_on_each_side_are_listed_sorted() -> None:
    with pytest.raises(MismatchError) as info:
        join_by_id(table([9, 1, 5, 3]), table([3, 8, 1, 0]))
    message = str(info.value)
    assert "2 only in the old file t (5, 9)" in message
    assert "2 only in the new file t (0, 8)" in message
    assert "compare the 2 ids they share" in message


def test_a_subset_on_one_side_only() -> None:
    with pytest.raises(MismatchError, match=r"0 only in the old file t and 1 only in the new"):
        join_by_id(table([1, 2]), table([2, 1, 3]))
    joined = join_by_id(table([1, 2]), table([2, 1, 3], predicted=[20, 10, 30]), how="inner")
    assert joined.new.tolist() == [10, 20] and joined.dropped_new == 1


@pytest.mark.parametrize(
    ("old_ids", "new_ids", "role", "shown"),
    [
        ([3, 1, 3, 2, 1, 1], [1, 2, 3], "old", "2 id(s) on more than one row (1, 3)"),
        ([1, 2, 3], [2, 2, 1, 3], "new", "1 id(s) on more than one row (2)"),
        (["b", "a", "b"], ["a", "b"], "old", "1 id(s) on more than one row ('b')"),
    ],
)
def test_repeated_ids_in_either_file(old_ids, new_ids, role, shown) -> None:
    with pytest.raises(InputError, match=rf"The {role} file") as info:
        join_by_id(table(old_ids), table(new_ids))
    assert shown in str(info.value)


def test_integer_ids_never_match_text_ids() -> None:
    with pytest.raises(MismatchError, match="share no ids"):
        join_by_id(table([1, 2]), table(["1", "2"]), how="inner")


def test_disagreeing_labels_are_found_after_the_shuffle() -> None:
    old = table([4, 1, 2], labels=[0, 1, 2])
    new = table([1, 2, 4], labels=[1, 0, 0])  # id 2: old says 2, new says 0
    with pytest.raises(MismatchError, match=r"1 of 3 sample\(s\) \(ids 2: .* says 2, .* says 0\)"):
        join_by_id(old, new)


def test_sorted_unique_by_hand() -> None:
    order, ordered, repeated = sorted_unique(np.array([30, 10, 20, 10, 30, 30]))
    assert ordered.tolist() == [10, 10, 20, 30, 30, 30]
    assert order.tolist() == [1, 3, 2, 0, 4, 5]  # stable
    assert repeated.tolist() == [10, 30]
