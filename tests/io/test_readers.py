"""read_predictions: every format round-trips, and every bad file fails with a clear message."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flipless.errors import FileFormatError, InputError
from flipless.io import read_predictions

# Scores that are exact in binary and in decimal text, so CSV and JSON round-trip them exactly.
SCORES = np.array([[0.5, -1.25, 2.0], [3.75, 0.0, -0.5], [1.0, 1.5, -2.25], [0.25, 0.75, 4.5]])
IDS = [10, 3, 7, 42]
LABELS = [2, 0, 1, 2]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Round trips ----------------------------------------------------------------------------------
def test_csv_with_numbered_logit_columns_orders_them_by_number(tmp_path: Path) -> None:
    # 11 classes so that text order (logit_10 before logit_2) differs from numeric order.
    scores = np.arange(44, dtype=float).reshape(4, 11) / 4
    frame = pd.DataFrame({"id": IDS, "label": LABELS})
    for k in sorted(range(11), key=str):  # columns written in text order
        frame[f"logit_{k}"] = scores[:, k]
    frame.to_csv(tmp_path / "p.csv", index=False)

    table = read_predictions(tmp_path / "p.csv")

    assert table.ids.tolist() == IDS
    assert table.labels.tolist() == LABELS
    np.testing.assert_array_equal(table.scores, scores)
    assert table.predicted is None
    assert table.class_names is None
    assert list(table.extra.columns) == []
    assert len(table) == 4


def test_csv_with_a_json_list_column(tmp_path: Path) -> None:
    lines = ["id,label,logits,domain"]
    lines += [
        f'{i},{y},"{json.dumps(row.tolist())}",d{i % 2}'
        for i, y, row in zip(IDS, LABELS, SCORES, strict=True)
    ]
    path = write_csv(tmp_path / "p.csv", "\n".join(lines) + "\n")

    table = read_predictions(path)

    assert table.ids.tolist() == IDS
    np.testing.assert_array_equal(table.scores, SCORES)
    assert table.extra["domain"].tolist() == ["d0", "d1", "d1", "d0"]


def test_csv_with_predicted_class_names_and_a_sidecar(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "uid,gt,pred\na,cat,dog\nb,dog,dog\nc,bird,cat\n")
    (tmp_path / "p.csv.classes.json").write_text('["cat", "dog", "bird"]')

    table = read_predictions(path)

    assert table.ids.tolist() == ["a", "b", "c"]
    assert table.labels.tolist() == ["cat", "dog", "bird"]
    assert table.predicted.tolist() == ["dog", "dog", "cat"]
    assert table.scores is None
    assert table.class_names == ("cat", "dog", "bird")


def test_csv_ids_are_read_as_written(tmp_path: Path) -> None:
    # Leading zeros and exponent-looking ids must not become numbers.
    path = write_csv(tmp_path / "p.csv", "id,y,pred\n007,0,1\n1e5,1,1\n12,0,0\n")
    assert read_predictions(path).ids.tolist() == ["007", "1e5", "12"]


def test_integer_text_ids_become_integers(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "5", "label": 1, "pred": 0}\n{"id": 6, "label": 0, "pred": 0}\n')
    ids = read_predictions(path).ids
    assert ids.tolist() == [5, 6]
    assert ids.dtype == np.int64


def test_parquet_with_a_list_column(tmp_path: Path) -> None:
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
    frame = pd.DataFrame(
        {"sample_id": ["x", "y", "z"], "target": [1, 0, 0], "probs": list(probabilities)}
    )
    frame.to_parquet(tmp_path / "p.parquet")

    table = read_predictions(tmp_path / "p.parquet")

    assert table.ids.tolist() == ["x", "y", "z"]
    assert table.labels.tolist() == [1, 0, 0]
    np.testing.assert_array_equal(table.scores, probabilities)


def test_jsonl_with_scores_predictions_and_extra_fields(tmp_path: Path) -> None:
    rows = [
        {"id": f"s{i}", "label": y, "pred": int(np.argmax(s)), "scores": s.tolist(), "lang": "en"}
        for i, y, s in zip(IDS, LABELS, SCORES, strict=True)
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")

    table = read_predictions(path)

    assert table.ids.tolist() == ["s10", "s3", "s7", "s42"]
    assert table.labels.tolist() == LABELS
    assert table.predicted.tolist() == [2, 0, 1, 2]
    np.testing.assert_array_equal(table.scores, SCORES)
    assert table.extra["lang"].tolist() == ["en"] * 4


def test_npz_with_ids_class_names_and_an_extra_array(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "p.npz",
        ids=np.array(IDS),
        labels=np.array(LABELS),
        logits=SCORES.astype(np.float32),
        class_names=np.array(["a", "b", "c"]),
        group=np.array([1, 1, 2, 2]),
        features=np.zeros((4, 8)),
    )

    table = read_predictions(tmp_path / "p.npz")

    assert table.ids.tolist() == IDS
    assert table.labels.tolist() == LABELS
    np.testing.assert_array_equal(table.scores, SCORES)
    assert table.class_names == ("a", "b", "c")
    assert list(table.extra.columns) == ["group"]


def test_npz_without_ids_is_positional(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", y=np.array(["b", "a"]), pred=np.array(["a", "a"]))
    table = read_predictions(tmp_path / "p.npz")
    assert table.ids.tolist() == [0, 1]
    assert table.labels.tolist() == ["b", "a"]
    assert table.extra.shape == (2, 0)
    assert table.predicted.tolist() == ["a", "a"]


def test_result_file_from_the_training_scripts(tmp_path: Path) -> None:
    outputs = torch.tensor(SCORES, dtype=torch.float32)
    torch.save(
        {
            "pred": outputs.argmax(dim=1),
            "gt": torch.tensor(LABELS),
            "outputs": outputs,
            "features": [],
        },
        tmp_path / "old.result",
    )

    table = read_predictions(tmp_path / "old.result")

    assert table.ids.tolist() == [0, 1, 2, 3]
    assert table.labels.tolist() == LABELS
    assert table.predicted.tolist() == [2, 0, 1, 2]
    np.testing.assert_array_equal(table.scores, SCORES)


def test_info_json_with_labels_declares_class_names(tmp_path: Path) -> None:
    (tmp_path / "info.json").write_text(json.dumps({"name": "MASSIVE", "labels": ["x", "y"]}))
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,x,y\n")
    assert read_predictions(path).class_names == ("x", "y")


def test_info_json_without_labels_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "info.json").write_text(json.dumps({"name": "run 3"}))
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,0,1\n")
    assert read_predictions(path).class_names is None


def test_class_names_argument_wins_over_sidecars(tmp_path: Path) -> None:
    (tmp_path / "info.json").write_text(json.dumps({"labels": ["x", "y"]}))
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,0,1\n")
    assert read_predictions(path, class_names=["u", "v"]).class_names == ("u", "v")


def test_explicit_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "key,truth,a,b,guess\nk1,1,0.5,1.5,0\nk2,0,2.5,-1.0,1\n")
    table = read_predictions(path, id_column="key", label_column="truth", score_columns=["b", "a"])
    assert table.ids.tolist() == ["k1", "k2"]
    assert table.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(table.scores, [[1.5, 0.5], [-1.0, 2.5]])
    assert list(table.extra.columns) == ["guess"]

    by_prediction = read_predictions(path, id_column="key", prediction_column="guess")
    assert by_prediction.predicted.tolist() == [0, 1]
    assert by_prediction.scores is None


def test_explicit_list_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", 'id,label,out\n1,0,"[1, 2]"\n2,1,"[3, 4]"\n')
    table = read_predictions(path, score_columns="out")
    np.testing.assert_array_equal(table.scores, [[1, 2], [3, 4]])


def test_file_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "predictions.txt", "id,label,pred\n1,0,1\n2,1,1\n")
    assert read_predictions(path, file_format="csv").predicted.tolist() == [1, 1]


# Bad files ------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="does not exist"):
        read_predictions(tmp_path / "nope.csv")


def test_empty_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "")
    with pytest.raises(FileFormatError, match=r"is empty \(0 bytes\)"):
        read_predictions(path)


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n")
    with pytest.raises(FileFormatError, match="has no rows"):
        read_predictions(path)


def test_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": range(50), "label": [0] * 50, "pred": [1] * 50}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"could not be read as parquet .*truncated"):
        read_predictions(path)


def test_truncated_npz(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, ids=np.arange(100), pred=np.zeros(100, int), labels=np.ones(100, int))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"could not be read as an npz archive"):
        read_predictions(path)


def test_npz_with_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, pred=np.array([0, 1]), labels=np.array(["a", None], dtype=object))
    with pytest.raises(FileFormatError, match="allow_pickle=False"):
        read_predictions(path)


class Opaque:
    """Not a tensor: weights_only loading must refuse it."""


def test_result_holding_a_custom_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.result"
    torch.save({"pred": torch.tensor([0, 1]), "gt": torch.tensor([0, 1]), "x": Opaque()}, path)
    with pytest.raises(FileFormatError, match=r"not a prediction dict.*weights_only=True") as info:
        read_predictions(path)
    assert "Opaque" in str(info.value)


def test_result_that_is_a_plain_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.result"
    path.write_bytes(pickle.dumps(Opaque()))
    with pytest.raises(FileFormatError, match=r"not a prediction dict.*weights_only=True"):
        read_predictions(path)


def test_result_with_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "model.result"
    torch.save({"state_dict_weight": torch.zeros(3, 3), "epoch": torch.tensor(3)}, path)
    with pytest.raises(FileFormatError, match="neither predicted labels nor scores") as info:
        read_predictions(path)
    assert "'state_dict_weight', 'epoch'" in str(info.value)
    assert "'pred'" in str(info.value)


def test_result_that_is_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.result"
    torch.save(torch.zeros(4), path)
    with pytest.raises(FileFormatError, match=r"holds a Tensor; expected a dict of tensors"):
        read_predictions(path)


def test_truncated_result(tmp_path: Path) -> None:
    path = tmp_path / "model.result"
    torch.save({"pred": torch.zeros(100, dtype=torch.long), "gt": torch.zeros(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="could not be read as a torch file"):
        read_predictions(path)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (".result", "is not a prediction dict that can be loaded safely"),
        (".npz", "could not be read as an npz archive"),
        (".parquet", "could not be read as parquet"),
        (".csv", "could not be read as csv"),
        (".jsonl", "could not be read as jsonl"),
    ],
)
def test_random_bytes(tmp_path: Path, suffix: str, message: str) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes())
    with pytest.raises(FileFormatError, match=message) as info:
        read_predictions(path)
    assert str(path) in str(info.value)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.xlsx", "id\n1\n")
    with pytest.raises(FileFormatError, match=r"unknown suffix '\.xlsx'.*\.csv.*file_format="):
        read_predictions(path)


def test_unknown_file_format_argument(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id\n1\n")
    with pytest.raises(InputError, match="file_format='excel'"):
        read_predictions(path, file_format="excel")


def test_no_id_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "name,label,pred\na,0,1\n")
    with pytest.raises(FileFormatError, match=r"no id column.*'name', 'label', 'pred'.*--id-col"):
        read_predictions(path)


def test_named_column_that_does_not_exist(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,0,1\n")
    with pytest.raises(FileFormatError, match=r"no column 'truth'.*'id', 'label', 'pred'"):
        read_predictions(path, label_column="truth")
    with pytest.raises(FileFormatError, match=r"no score column\(s\) 'logit_9'"):
        read_predictions(path, score_columns=["logit_9"])


def test_neither_predictions_nor_scores(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,note\n1,0,x\n")
    with pytest.raises(FileFormatError, match="neither predicted labels nor scores"):
        read_predictions(path)


def test_two_candidate_label_columns_are_ambiguous(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,y,pred\n1,0,0,1\n")
    with pytest.raises(FileFormatError, match=r"several columns .*label \(label, y\).*--label-col"):
        read_predictions(path)


def test_ragged_score_lists(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"id": 1, "logits": [1, 2]},
        {"id": 2, "logits": [1, 2, 3]},
        {"id": 3, "logits": [0, 1]},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(FileFormatError, match=r"ragged .*1 row\(s\) differ.*ids 2\)"):
        read_predictions(path)


def test_non_numeric_scores(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,logit_0,logit_1\n1,0.5,abc\n2,1.0,2.0\n")
    with pytest.raises(FileFormatError, match=r"'logit_1'.* not numeric"):
        read_predictions(path)
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "scores": [1, "high"]}\n')
    with pytest.raises(FileFormatError, match="non-numeric"):
        read_predictions(path)


def test_score_cell_that_is_not_a_list(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", 'id,logits\n1,"[1, 2]"\n2,oops\n')
    with pytest.raises(FileFormatError, match=r"1 cell\(s\) .* not lists of numbers \(ids 2"):
        read_predictions(path)


def test_nan_scores_name_the_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,logit_0,logit_1\n1,0.5,1\n2,,2.0\n")
    with pytest.raises(FileFormatError, match=r"1 row\(s\) have NaN or infinite scores \(ids 2\)"):
        read_predictions(path)


def test_gap_in_numbered_score_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,logit_0,logit_2\n1,0.5,1\n")
    with pytest.raises(FileFormatError, match="missing 'logit_1'"):
        read_predictions(path)


def test_nan_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,0,1\n,1,1\n3,0,0\n")
    with pytest.raises(FileFormatError, match=r"1 row\(s\) have no id .*rows counted from 0: 1\)"):
        read_predictions(path)


def test_missing_labels_name_the_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,0,1\n2,,1\n")
    with pytest.raises(FileFormatError, match=r"1 row\(s\) have no labels \(ids 2\)"):
        read_predictions(path)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "pred": 0}\n{"id": 2, "pred": \n')
    with pytest.raises(FileFormatError, match="line 2 is not valid JSON"):
        read_predictions(path)


def test_class_names_that_do_not_fit_the_scores(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,logit_0,logit_1\n1,0.5,1\n")
    with pytest.raises(FileFormatError, match=r"2 scores per row but 3 declared class names"):
        read_predictions(path, class_names=["a", "b", "c"])


def test_repeated_class_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "id,label,pred\n1,a,b\n")
    (tmp_path / "p.csv.classes.json").write_text('{"labels": ["a", "b", "a"]}')
    with pytest.raises(FileFormatError, match=r"classes\.json repeats 'a'"):
        read_predictions(path)


def test_npz_suffix_on_a_single_npy_array(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    with path.open("wb") as stream:
        np.save(stream, np.zeros((3, 2)))
    with pytest.raises(FileFormatError, match=r"single array of shape \(3, 2\).*np\.savez"):
        read_predictions(path)


def test_two_sets_of_scores_are_ambiguous(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", 'id,logits,prob_0,prob_1\n1,"[1, 2]",0.5,0.5\n')
    with pytest.raises(FileFormatError, match=r"several sets of scores \(logits, prob_0…prob_1\)"):
        read_predictions(path)


def test_parquet_through_arrow_reads_what_pandas_reads(tmp_path: Path) -> None:
    """Parquet columns go to numpy from Arrow; every kind of column must come out as the
    DataFrame path (the reader of csv and jsonl files) gives it from pandas.read_parquet."""
    from flipless.io.columns import FrameColumns
    from flipless.io.readers import Chosen, _from_columns

    frame = pd.DataFrame(
        {
            "id": ["a7", "b2", "c9", "d1"],
            "label": pd.Categorical(["cat", "dog", "cat", "owl"]),  # dictionary-encoded
            "logit_0": [0.5, -1.0, 2.0, 0.0],
            "logit_1": [1.5, 0.25, -2.0, 0.0],
            "logit_2": [0.0, 0.0, 0.0, 3.0],
            "day": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-04"]),
            "count": pd.array([1, None, 3, 4], dtype="Int64"),
            "region": ["n", None, "s", "s"],
        },
        index=[40, 30, 20, 10],  # stored by pandas as a column, read back as the index
    )
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    arrow = read_predictions(path, class_names=["cat", "dog", "owl"])
    pandas = _from_columns(
        str(path), FrameColumns(pd.read_parquet(path)), Chosen(None, None, None, None)
    )
    assert arrow.ids.dtype == pandas.ids.dtype == object
    assert arrow.ids.tolist() == pandas.ids.tolist() == ["a7", "b2", "c9", "d1"]
    assert arrow.labels.tolist() == pandas.labels.tolist() == ["cat", "dog", "cat", "owl"]
    np.testing.assert_array_equal(arrow.scores, pandas.scores)
    pd.testing.assert_frame_equal(arrow.extra, pandas.extra)
    assert list(arrow.extra.columns) == ["day", "count", "region"]


def test_parquet_integer_ids_with_a_gap_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame(
        {"id": pd.array([1, None, 3], dtype="Int64"), "label": [0, 1, 0], "pred": [0, 0, 0]}
    ).to_parquet(path)
    with pytest.raises(FileFormatError, match=r"1 row\(s\) have no id .*rows counted from 0: 1"):
        read_predictions(path)
