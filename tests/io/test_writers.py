"""write_predictions: every format reads back exactly, nothing is overwritten or half-written."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from flipless.errors import InputError, MismatchError
from flipless.io import read_predictions, write_predictions, writers

IDS = np.array([10, 3, 7, 42])
LABELS = np.array([2, 0, 1, 2])
PREDICTED = np.array([2, 1, 1, 0])
# float32 logits with long binary expansions: CSV and JSON text must still give them back exactly.
LOGITS = np.array(
    [[0.1, -1.3, 2.7], [3.3, 0.7, -0.9], [1.1, 1.9, -2.3], [0.3, 0.6, 4.4]], dtype=np.float32
)
NAMES = ("10", "2", "cat")  # names that look like numbers must not be read as indices
SUFFIXES = ("csv", "parquet", "jsonl", "npz")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_format_reads_back_the_same_fields(tmp_path: Path, suffix: str) -> None:
    path = write_predictions(
        tmp_path / f"p.{suffix}", IDS, PREDICTED, labels=LABELS, scores=LOGITS, class_names=NAMES
    )

    table = read_predictions(path)

    assert table.ids.tolist() == IDS.tolist()
    assert table.labels.tolist() == LABELS.tolist()
    assert table.predicted.tolist() == PREDICTED.tolist()
    np.testing.assert_array_equal(table.scores, LOGITS.astype(np.float64))  # exact
    assert table.class_names == NAMES
    assert list(table.extra.columns) == []  # nothing that compare would take as a slice
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_text_ids_without_labels_or_scores(tmp_path: Path, suffix: str) -> None:
    ids = np.array(["a-1", "007", "b"], dtype=object)

    table = read_predictions(write_predictions(tmp_path / f"p.{suffix}", ids, [0, 1, 0]))

    assert table.ids.tolist() == ["a-1", "007", "b"]
    assert table.labels is None and table.scores is None and table.class_names is None
    assert table.predicted.tolist() == [0, 1, 0]


def test_probabilities_are_written_under_their_own_name(tmp_path: Path) -> None:
    probabilities = np.array([[0.25, 0.75], [1.0, 0.0]])
    write_predictions(
        tmp_path / "p.csv", [1, 2], [1, 0], scores=probabilities, scores_kind="probabilities"
    )
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "id,prediction,prob_0,prob_1"
    np.testing.assert_array_equal(read_predictions(tmp_path / "p.csv").scores, probabilities)


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write_predictions(path, IDS, PREDICTED, class_names=NAMES)
    with pytest.raises(
        InputError, match=r"already exists?;.*--overwrite \(overwrite=True in Python\)"
    ):
        write_predictions(path, IDS, LABELS)
    assert read_predictions(path).predicted.tolist() == PREDICTED.tolist()

    write_predictions(path, IDS, LABELS, overwrite=True)  # no class names this time

    assert read_predictions(path).predicted.tolist() == LABELS.tolist()
    assert not (tmp_path / "p.parquet.classes.json").exists()  # the stale sidecar is gone


def test_a_crash_while_writing_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "p.jsonl"
    write_predictions(path, IDS, PREDICTED)
    before = path.read_bytes()

    def crash(target: Path, fields, scores_kind) -> None:
        target.write_text('{"id": 10, "predic')  # half a line, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setitem(writers.WRITERS, "jsonl", crash)
    with pytest.raises(KeyboardInterrupt):
        write_predictions(path, IDS, LABELS, overwrite=True)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_the_folder_is_created(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "a" / "b" / "p.npz", IDS, PREDICTED)
    assert read_predictions(path).ids.tolist() == IDS.tolist()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"path": "p.txt"}, InputError, r"suffix '\.txt'.*\.csv, \.parquet"),
        ({"path": "p.result"}, InputError, r"suffix '\.result'"),
        ({"ids": [1, 1, 2, 3]}, InputError, r"1 id\(s\) appear more than once \(1\)"),
        ({"predicted": [0, 1]}, MismatchError, r"different lengths \(id 4, prediction 2"),
        ({"predicted": [0, 3, 1, 1]}, InputError, r"prediction values 3 \(ids 3\).*\[0, 3\)"),
        ({"labels": [0, 1, -1, 0]}, InputError, r"label values -1 \(ids 7\)"),
        ({"class_names": ("a", "b")}, MismatchError, r"3 scores per sample but 2 class names"),
        ({"scores_kind": "margins"}, InputError, r"scores_kind='margins'"),
        ({"predicted": [0.0, 1.0, 1.0, 0.0]}, InputError, r"expected int class indices"),
        ({"scores": np.ones(4)}, InputError, r"expected numbers \[N, C\]"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, arguments: dict, error: type, message: str
) -> None:
    call = {"path": "p.csv", "ids": IDS, "predicted": PREDICTED, "scores": LOGITS}
    call.update(arguments)
    call["path"] = tmp_path / call["path"]
    with pytest.raises(error, match=message):
        write_predictions(call.pop("path"), call.pop("ids"), call.pop("predicted"), **call)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_scores_name_the_ids(tmp_path: Path) -> None:
    scores = LOGITS.copy()
    scores[2, 1] = np.nan
    with pytest.raises(InputError, match=r"1 row\(s\) of scores are NaN or infinite \(ids 7\)"):
        write_predictions(tmp_path / "p.csv", IDS, PREDICTED, scores=scores)


def test_a_url_is_written_whole_with_its_sidecar() -> None:
    fsspec = pytest.importorskip("fsspec")
    folder = f"memory://writers-{uuid.uuid4().hex}"
    path = f"{folder}/p.parquet"
    try:
        write_predictions(path, IDS, PREDICTED, scores=LOGITS, class_names=NAMES)
        table = read_predictions(path)
        assert table.class_names == NAMES and table.predicted.tolist() == PREDICTED.tolist()
        with pytest.raises(InputError, match="already exist"):
            write_predictions(path, IDS, PREDICTED)
        write_predictions(path, IDS, LABELS, overwrite=True)
        assert read_predictions(path).class_names is None  # the sidecar went with it
    finally:
        fsspec.filesystem("memory").rm(folder.split("://")[1], recursive=True)
