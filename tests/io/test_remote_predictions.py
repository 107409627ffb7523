"""Prediction files read from URLs: a real S3 server (moto, on 127.0.0.1) and memory://."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pandas as pd
import pytest
import torch

from flipless import remote
from flipless.errors import FileFormatError
from flipless.io import compare_files, read_predictions

# Six samples; by hand: old right on 0, 1, 2, 4; new right on 0, 2, 3, 4, 5.
# Negative flips (old right, new wrong): sample 1 only; positive flips: samples 3 and 5.
IDS = [10, 11, 12, 13, 14, 15]
LABELS = [0, 1, 2, 0, 1, 2]
OLD = [0, 1, 2, 1, 1, 0]
NEW = [0, 2, 2, 0, 1, 2]
NAMES = ["cat", "dog", "eel"]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_pair(folder: str) -> tuple[str, str]:
    """old.csv (with a .classes.json sidecar) and new.parquet under ``folder``."""
    old = f"{folder}/old.csv"
    remote.write_text(
        old, pd.DataFrame({"id": IDS, "label": LABELS, "pred": OLD}).to_csv(index=False)
    )
    remote.write_text(f"{old}.classes.json", json.dumps(NAMES))
    new = f"{folder}/new.parquet"
    remote.write_bytes(new, parquet_bytes(pd.DataFrame({"id": IDS, "label": LABELS, "pred": NEW})))
    return old, new


def check_hand_counts(comparison) -> None:
    assert comparison.negative_flips == 1
    assert comparison.positive_flips == 2
    assert comparison.negative_flip_rate == pytest.approx(1 / 6, abs=1e-12)
    assert comparison.negative_flip_ids().tolist() == [11]
    assert comparison.class_names == tuple(NAMES)


def test_compare_files_on_s3(s3_bucket):
    old, new = write_pair(f"{s3_bucket}/run")
    check_hand_counts(compare_files(old, new))


def test_compare_files_on_memory():
    folder = f"memory://predictions-{uuid.uuid4().hex[:8]}"
    old, new = write_pair(folder)
    check_hand_counts(compare_files(old, new))


def test_npz_jsonl_and_result_files_on_memory():
    folder = f"memory://formats-{uuid.uuid4().hex[:8]}"
    scores = np.eye(3)[OLD] * 2.0 - 1.0  # the argmax is the old prediction
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(IDS), labels=np.array(LABELS), logits=scores)
    remote.write_bytes(f"{folder}/old.npz", buffer.getvalue())
    lines = [
        json.dumps({"id": i, "label": y, "pred": p})
        for i, y, p in zip(IDS, LABELS, NEW, strict=True)
    ]
    remote.write_text(f"{folder}/new.jsonl", "\n".join(lines) + "\n")
    saved = io.BytesIO()
    torch.save({"pred": torch.tensor(NEW), "gt": torch.tensor(LABELS)}, saved)
    remote.write_bytes(f"{folder}/new.result", saved.getvalue())
    table = read_predictions(f"{folder}/old.npz")
    assert table.source == f"{folder}/old.npz"
    np.testing.assert_array_equal(table.scores, scores)
    comparison = compare_files(f"{folder}/old.npz", f"{folder}/new.jsonl")
    assert (comparison.negative_flips, comparison.positive_flips) == (1, 2)
    positional = read_predictions(f"{folder}/new.result")
    assert positional.ids.tolist() == list(range(6)) and positional.predicted.tolist() == NEW


def test_missing_and_empty_remote_prediction_files(s3_bucket):
    with pytest.raises(FileFormatError, match=r"missing\.csv does not exist"):
        read_predictions(f"{s3_bucket}/missing.csv")
    remote.write_bytes(f"{s3_bucket}/empty.csv", b"")
    with pytest.raises(FileFormatError, match="is empty"):
        read_predictions(f"{s3_bucket}/empty.csv")
