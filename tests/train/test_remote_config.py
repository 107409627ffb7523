"""Configs read from URLs; sweep stores at URLs in configs, and read back from URLs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flipless import remote
from flipless.errors import FileFormatError, InputError
from flipless.sweep.config import load_sweep_config, with_overrides
from flipless.sweep.store import ResultsStore, read_records
from flipless.train.config import load_config, parse_config

RUN = """
output_dir = "runs/fd"

[data]
name = "digits"

[old]
checkpoint = "{checkpoint}"

[loss]
preset = "fd-kl"
"""

SWEEP = """
[data]
name = "digits"

[old]
train_epochs = 1

[sweep]
store = "{store}"
seeds = [0]

[[sweep.methods]]
method = "fd-kl"
strengths = [1]
"""


def test_run_config_from_s3(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = f"{s3_bucket}/models/old.safetensors"
    remote.write_text(f"{s3_bucket}/configs/run.toml", RUN.format(checkpoint=checkpoint))
    config = load_config(f"{s3_bucket}/configs/run.toml")
    assert config.old.checkpoint == checkpoint  # a URL stays a URL
    assert Path(config.output_dir) == (tmp_path / "runs" / "fd").resolve()  # from the cwd
    assert config.loss.preset == "fd-kl"


def test_missing_and_invalid_remote_configs(s3_bucket):
    with pytest.raises(FileFormatError, match="no config file at s3://"):
        load_config(f"{s3_bucket}/configs/missing.toml")
    remote.write_text(f"{s3_bucket}/bad.yaml", "a: [1, 2")
    with pytest.raises(FileFormatError, match="not valid YAML"):
        load_config(f"{s3_bucket}/bad.yaml")


def test_output_dir_may_be_a_url():  # staged locally and uploaded (tests/train/test_remote_run.py)
    document = {"output_dir": "s3://bucket/runs", "data": {"name": "digits"}}
    document["old"] = {"train_epochs": 1}
    assert parse_config(document).output_dir == "s3://bucket/runs"


def test_sweep_stores_at_urls_and_stores_read_remotely(tmp_path):
    folder = f"memory://sweep-{uuid.uuid4().hex[:8]}"
    config_url = f"{folder}/sweep.toml"
    remote.write_text(config_url, SWEEP.format(store="s3://bucket/sweep/results.jsonl"))
    assert load_sweep_config(config_url).store == "s3://bucket/sweep/results.jsonl"
    remote.write_text(config_url, SWEEP.format(store=str(tmp_path / "results.jsonl")))
    config = load_sweep_config(config_url)
    assert config.store == str(tmp_path / "results.jsonl")
    assert with_overrides(config, store="memory://x/results.jsonl").store == (
        "memory://x/results.jsonl"
    )
    with pytest.raises(InputError, match="appends to a local file"):
        ResultsStore(f"{folder}/results.jsonl")  # the sweep stages a URL store itself

    store = ResultsStore(tmp_path / "results.jsonl")
    record = {"schema": "flipless.sweep-record/1", "point_id": "p0", "metrics": {"nfr": 0.5}}
    store.append(record)
    remote.write_bytes(f"{folder}/copied.jsonl", (tmp_path / "results.jsonl").read_bytes())
    assert read_records(f"{folder}/copied.jsonl") == [record]
    assert read_records(f"{folder}/not-yet.jsonl") == []
