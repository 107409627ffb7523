"""Folders written by datasets' save_to_disk → labelled splits."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from flipless.data.columns import ColumnOptions
from flipless.data.hf_disk import check_hf_disk, is_hf_disk_folder, load_hf_disk
from flipless.errors import FileFormatError, InputError, MismatchError, MissingExtraError

datasets = pytest.importorskip("datasets")


def intents(names=("greet", "leave", "thank")) -> datasets.Features:
    return datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))}
    )


def test_a_dataset_dict_gives_its_splits_and_class_label_names(tmp_path):
    features = intents()
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"text": ["hi", "bye", "thanks"], "label": [0, 1, 2]}, features=features
            ),
            "val": datasets.Dataset.from_dict({"text": ["yo"], "label": [0]}, features=features),
            "test": datasets.Dataset.from_dict(
                {"text": ["ciao", "ta"], "label": [1, 2]}, features=features
            ),
        }
    ).save_to_disk(tmp_path / "intents")
    assert is_hf_disk_folder(tmp_path / "intents")
    splits = load_hf_disk(tmp_path / "intents")
    assert list(splits) == ["train", "validation", "test"]
    train = splits["train"]
    assert train.class_names == ("greet", "leave", "thank")  # from the ClassLabel, not the data
    assert train.inputs == ["hi", "bye", "thanks"] and train.labels.tolist() == [0, 1, 2]
    # row numbers continue over the splits in the folder's order
    assert train.ids.tolist() == [0, 1, 2]
    assert splits["validation"].ids.tolist() == [3]
    assert splits["test"].ids.tolist() == [4, 5]
    assert splits["test"].class_names == train.class_names  # class 0 absent here, still listed


def test_a_single_dataset_split_by_its_split_column_with_string_ids(tmp_path):
    datasets.Dataset.from_dict(
        {
            "uid": ["c", "a", "b"],
            "x1": [0.5, 1.0, 2.0],
            "x2": [1, 2, 3],
            "label": ["no", "yes", "no"],
            "split": ["train", "train", "test"],
        }
    ).save_to_disk(tmp_path / "rows")
    splits = load_hf_disk(tmp_path / "rows", ColumnOptions(id_column="uid"))
    assert list(splits) == ["test", "train"]
    assert splits.id_names == ("a", "b", "c")
    assert splits["train"].ids.tolist() == [2, 0] and splits["test"].ids.tolist() == [1]
    np.testing.assert_array_equal(
        splits["train"].inputs.numpy(), np.array([[0.5, 1.0], [1.0, 2.0]], dtype=np.float32)
    )
    assert splits["train"].class_names == ("no", "yes")


def test_a_single_dataset_without_a_split_column_is_named_after_the_folder(tmp_path):
    datasets.Dataset.from_dict({"text": ["a"], "label": [0]}).save_to_disk(tmp_path / "extra")
    assert list(load_hf_disk(tmp_path / "extra")) == ["extra"]


def test_image_features_are_decoded(tmp_path):
    from PIL import Image

    pictures = [
        Image.fromarray(np.full((2, 3), 255, dtype=np.uint8)),
        Image.fromarray(np.zeros((2, 3), dtype=np.uint8)),
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["white", "black"])}
    )
    datasets.Dataset.from_dict(
        {"image": pictures, "label": [0, 1]}, features=features, split="train"
    ).save_to_disk(tmp_path / "pictures")
    data = load_hf_disk(tmp_path / "pictures")["train"]
    assert tuple(data.inputs.shape) == (2, 1, 2, 3)
    np.testing.assert_allclose(data.inputs[0].numpy(), 1.0, atol=1e-7)
    np.testing.assert_allclose(data.inputs[1].numpy(), 0.0, atol=1e-7)


def test_no_label_rows_and_class_conflicts_are_errors(tmp_path):
    datasets.Dataset.from_dict(
        {"text": ["a", "b"], "label": [0, -1]}, features=intents()
    ).save_to_disk(tmp_path / "unlabelled")
    with pytest.raises(FileFormatError, match=r"row 1: label -1 means 'no label'"):
        check_hf_disk(tmp_path / "unlabelled")
    datasets.Dataset.from_dict({"text": ["a"], "label": [0]}, features=intents()).save_to_disk(
        tmp_path / "labelled"
    )
    with pytest.raises(MismatchError, match="differs from the class names the data declares"):
        load_hf_disk(tmp_path / "labelled", ColumnOptions(classes=("a", "b", "c")))
    with pytest.raises(InputError, match=r"no column 'intent' \(label_column\)"):
        load_hf_disk(tmp_path / "labelled", ColumnOptions(label_column="intent"))


def test_a_folder_save_to_disk_did_not_write_is_refused(tmp_path):
    (tmp_path / "plain").mkdir()
    assert not is_hf_disk_folder(tmp_path / "plain")
    with pytest.raises(FileFormatError, match="not a folder written by datasets' save_to_disk"):
        load_hf_disk(tmp_path / "plain")


def test_without_datasets_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[hf\]'"):
        load_hf_disk(tmp_path)
