"""Sweeps whose store is a URL: staged locally, mirrored record by record, resumed from the URL."""

from __future__ import annotations

import json
import tomllib
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flipless import remote
from flipless.cli import app
from flipless.errors import FliplessWarning, InputError
from flipless.sweep.config import parse_sweep_config, with_overrides
from flipless.sweep.remote_store import FolderMirror, MirroredStore
from flipless.sweep.runner import run_sweep
from flipless.sweep.store import RECORD_SCHEMA, read_records

BASE = """
[data]
name = "digits"

[model]
name = "mlp"
hidden = [8]

[old]
train_epochs = 1

[optimizer]
name = "sgd"
lr = 0.1

[train]
epochs = 1
batch_size = 128
progress = "none"
"""
METHODS = [{"method": "fd-kl", "strengths": [1.0]}, {"method": "bcwi", "strengths": [0.5]}]


def sweep_config(store: str):
    document = tomllib.loads(BASE)
    document["sweep"] = {"store": store, "seeds": [0], "methods": METHODS, "threads": 1}
    return parse_sweep_config(document)


def listing(url: str) -> set[str]:
    fs, inner = remote.filesystem(url)
    return {path[len(inner.rstrip("/")) + 1 :] for path in fs.find(inner)}


@pytest.fixture(scope="module")
def s3_sweep(s3_server):
    """The sweep run once with its store in a new S3 bucket; the uploads in order."""
    import s3fs

    bucket = f"flipless-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    store = f"s3://{bucket}/sweep/results.jsonl"
    uploads: list[str] = []
    copy = remote.copy_file

    def spy(source, target):
        uploads.append(str(target))
        copy(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(remote, "copy_file", spy)
        outcome = run_sweep(sweep_config(store), quiet=True)
    return store, outcome, uploads


@pytest.mark.slow
def test_a_sweep_on_s3_uploads_each_point_before_its_record(s3_sweep):
    store, outcome, uploads = s3_sweep
    folder = store.rsplit("/", 1)[0]
    assert len(outcome.ran) == 3 and outcome.skipped == [] and str(outcome.store) == store
    assert read_records(store) == outcome.records
    files = listing(folder)
    assert {"results.jsonl", "sweep.json", "old.safetensors", "events.log"} <= files
    assert not any(name.startswith(".") for name in files)  # no lock, no temporaries
    store_uploads = [i for i, target in enumerate(uploads) if target == store]
    assert len(store_uploads) == 3  # once per record, the whole store each time
    assert uploads.index(f"{folder}/sweep.json") < store_uploads[0]
    for record, at in zip(outcome.records, store_uploads, strict=True):
        for key in ("model_path", "comparison_path"):
            assert record[key] in files
            assert uploads.index(f"{folder}/{record[key]}") < at  # the files, then the record
    assert not (Path.cwd() / "s3:").exists()


@pytest.mark.slow
def test_a_rerun_finds_every_point_at_the_url_and_runs_none(s3_sweep):
    store, outcome, _ = s3_sweep
    again = run_sweep(sweep_config(store), quiet=True)
    assert again.ran == [] and again.skipped == [r["point_id"] for r in outcome.records]
    assert again.records == outcome.records


@pytest.mark.slow
def test_a_sweep_killed_before_its_last_upload_runs_only_that_point(s3_sweep):
    """The URL holds two whole records and a torn third (a store written by other means):
    the rerun repairs it as a local store is repaired, and runs exactly the missing point."""
    store, outcome, _ = s3_sweep
    folder = f"memory://sweep-{uuid.uuid4().hex[:8]}"
    for name in listing(store.rsplit("/", 1)[0]):
        remote.copy_file(f"{store.rsplit('/', 1)[0]}/{name}", f"{folder}/{name}")
    lines = remote.read_bytes(store).splitlines(keepends=True)
    remote.write_bytes(f"{folder}/results.jsonl", lines[0] + lines[1] + lines[2][:40])
    with pytest.warns(FliplessWarning, match="incomplete"):
        resumed = run_sweep(sweep_config(f"{folder}/results.jsonl"), quiet=True)
    last = outcome.records[2]["point_id"]
    assert resumed.ran == [last] and len(resumed.skipped) == 2
    records = read_records(f"{folder}/results.jsonl")
    assert [r["metrics"] for r in records] == [r["metrics"] for r in outcome.records]


@pytest.mark.slow
def test_the_report_reads_the_store_on_s3(s3_sweep):
    store, _, _ = s3_sweep
    report = store.rsplit("/", 1)[0] + "/report.html"
    result = CliRunner().invoke(app, ["report", store, "--out", report])
    assert result.exit_code == 0, result.output
    assert "fd-kl" in remote.read_text(report)


def test_a_new_store_is_refused_for_a_url():
    config = sweep_config(f"memory://sweep-{uuid.uuid4().hex[:8]}/results.jsonl")
    with pytest.raises(InputError, match="--force-new-store moves a local store aside"):
        run_sweep(config, quiet=True, new_store=True)


def test_store_urls_in_configs_and_overrides(tmp_path):
    config = sweep_config("s3://bucket/sweep/results.parquet")
    assert config.store == "s3://bucket/sweep/results.parquet"
    assert config.folder == "s3://bucket/sweep" and config.base.output_dir == "s3://bucket/sweep"
    moved = with_overrides(config, store="memory://x/results.jsonl")
    assert moved.store == "memory://x/results.jsonl" and moved.folder == "memory://x"
    with pytest.raises(InputError, match=r"sweep\.store='memory://x/results\.csv'"):
        with_overrides(config, store="memory://x/results.csv")
    document = tomllib.loads(BASE)
    document["output_dir"] = "s3://bucket/other"
    document["sweep"] = {"store": "s3://bucket/sweep/results.jsonl", "methods": METHODS}
    with pytest.raises(InputError, match="lies in another folder"):
        parse_sweep_config(document)


def test_a_mirrored_parquet_store_uploads_the_point_then_the_whole_store(tmp_path):
    url = f"memory://sweep-{uuid.uuid4().hex[:8]}"
    (tmp_path / "points" / "p0").mkdir(parents=True)
    (tmp_path / "points" / "p0" / "model.safetensors").write_bytes(b"weights")
    store = MirroredStore(tmp_path / "results.parquet", FolderMirror(tmp_path, url))
    record = {"schema": RECORD_SCHEMA, "point_id": "p0", "metrics": {"nfr": 0.25}}
    store.append({**record, "model_path": "points/p0/model.safetensors"})
    assert remote.read_bytes(f"{url}/points/p0/model.safetensors") == b"weights"
    assert read_records(f"{url}/results.parquet") == store.records()
    assert json.loads(json.dumps(store.records()[0]["metrics"])) == {"nfr": 0.25}
