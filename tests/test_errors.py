"""The error classes are also the built-in exceptions a Python user would catch."""

from __future__ import annotations

import pytest

from flipless.errors import (
    FileFormatError,
    FliplessError,
    InputError,
    MismatchError,
    MissingExtraError,
    MissingFileError,
)
from flipless.io import read_predictions
from flipless.models.files import load_model
from flipless.train.config import load_config


def test_the_hierarchy():
    assert issubclass(InputError, ValueError) and issubclass(MismatchError, InputError)
    assert issubclass(FileFormatError, FliplessError) and issubclass(FileFormatError, ValueError)
    assert issubclass(MissingFileError, FileFormatError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, OSError)
    assert issubclass(MissingExtraError, ImportError)
    assert str(MissingFileError("no file at x.csv; check the path.")) == (
        "no file at x.csv; check the path."
    )


@pytest.mark.parametrize(
    "read",
    [
        lambda folder: read_predictions(folder / "missing.csv"),
        lambda folder: load_model(folder / "missing.safetensors"),
        lambda folder: load_config(folder / "missing.toml"),
    ],
    ids=["predictions", "model", "config"],
)
def test_a_missing_file_is_caught_by_except_oserror(tmp_path, read):
    with pytest.raises(OSError, match="missing") as caught:
        read(tmp_path)
    assert isinstance(caught.value, MissingFileError)


def test_a_bad_file_is_caught_by_except_valueerror(tmp_path):
    (tmp_path / "bad.csv").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_predictions(tmp_path / "bad.csv")
