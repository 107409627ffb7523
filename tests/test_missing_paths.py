"""A path that does not exist raises MissingFileError, which ``except FileNotFoundError`` (and
so ``except OSError``) catches; a path that exists but is of the wrong kind stays a plain
FileFormatError, which it does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flipless.data.hf_disk import load_hf_disk
from flipless.data.loaders import (
    load_banking77,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_massive,
)
from flipless.data.sources import DataConfig, check_data, data_config_from_path
from flipless.data.table import load_table
from flipless.errors import FileFormatError, MissingFileError
from flipless.merge.sources import open_source
from flipless.merge.streaming import open_checkpoint
from flipless.models.files import load_model
from flipless.models.registry import build_model
from flipless.models.sources import load_model_source
from flipless.models.text import TextClassifier
from flipless.teachers import CachedTeacher

FOLDER_READERS: dict[str, Callable[[Path], Any]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "massive": load_massive,
    "banking77": load_banking77,
    "image-folder": load_image_folder,
    "hf-disk": load_hf_disk,
    "hf-model": lambda path: build_model("hf", path=str(path), num_classes=3),
    "text-classifier": lambda path: TextClassifier.from_pretrained(path, 3),
    "encoder-head": lambda path: build_model("encoder-head", path=str(path), num_classes=3),
}
READERS: dict[str, Callable[[Path], Any]] = {
    **FOLDER_READERS,
    "table": load_table,
    "check-data-table": lambda path: check_data(DataConfig(name="table", path=str(path))),
    "check-data-shipped": lambda path: check_data(DataConfig(name="cifar10", path=str(path))),
    "data-from-path": data_config_from_path,
    "model-checkpoint": load_model,
    "model-source": load_model_source,
    "teacher-cache": CachedTeacher.load,
    "merge-source": open_source,
    "merge-checkpoint": open_checkpoint,
}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_a_missing_path_is_caught_as_file_not_found(tmp_path, reader):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as caught:
        reader(missing)
    assert isinstance(caught.value, MissingFileError)
    assert "nowhere" in str(caught.value)


@pytest.mark.parametrize("reader", FOLDER_READERS.values(), ids=FOLDER_READERS.keys())
def test_a_file_where_a_folder_belongs_is_not_file_not_found(tmp_path, reader):
    file = tmp_path / "a-file"
    file.write_text("not a folder\n")
    with pytest.raises(FileFormatError) as caught:
        reader(file)
    assert not isinstance(caught.value, FileNotFoundError)


def test_a_missing_file_inside_a_data_folder_is_file_not_found(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(FileNotFoundError, match=r"no train\.jsonl"):
        load_massive(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train\.csv does not exist"):
        load_banking77(tmp_path)
    with pytest.raises(FileNotFoundError, match="CIFAR-10"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path)
