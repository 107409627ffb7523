"""`flipless train` with output_dir at a URL: staged locally, uploaded whole, summary.json last."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from flipless import Comparison, remote
from flipless.cli import app
from flipless.errors import InputError
from flipless.train import recipe
from flipless.train.check import check_output_dir

RUN = """
output_dir: {output_dir}
data: {{name: digits}}
model: {{name: mlp, hidden: [8]}}
old: {{train_epochs: 1}}
loss: {{preset: fd-kl, teacher: cached}}
optimizer: {{name: adamw, lr: 0.01}}
train: {{epochs: 1, batch_size: 256, progress: log}}
"""

RUN_FILES = {
    "config.json",
    "old.safetensors",
    "teacher.safetensors",
    "model.safetensors",
    "test_comparison.json",
    "summary.json",
}


def _uploads(monkeypatch) -> list[str]:
    """The targets of every copy_file call, in order (the real copies still happen)."""
    targets: list[str] = []
    copy = remote.copy_file

    def spy(source, target):
        targets.append(str(target))
        copy(source, target)

    monkeypatch.setattr(remote, "copy_file", spy)
    return targets


def _listing(url: str) -> set[str]:
    fs, inner = remote.filesystem(url)
    return {path[len(inner.rstrip("/")) + 1 :] for path in fs.find(inner)}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_train_to_s3_uploads_the_run_summary_last_and_resumes(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"{s3_bucket}/runs/fd"
    config = tmp_path / "run.yaml"
    config.write_text(RUN.format(output_dir=url))
    uploads = _uploads(monkeypatch)
    runner = CliRunner()
    first = runner.invoke(app, ["train", str(config)])
    assert first.exit_code == 0, first.output
    assert url in first.output  # "files in s3://…"
    listed = _listing(url)
    assert listed >= RUN_FILES and "new/checkpoint.pt" in listed
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "runs").exists()  # nothing local
    assert uploads[-1] == f"{url}/summary.json"
    assert sorted(uploads) == sorted(f"{url}/{name}" for name in listed)  # each file once
    summary = json.loads(remote.read_text(f"{url}/summary.json"))
    test = Comparison.from_json(f"{url}/test_comparison.json")
    assert summary["test"]["negative_flip_rate"] == pytest.approx(test.negative_flip_rate)

    # a rerun downloads the run and resumes it as a local rerun does: no epoch trained again
    second = runner.invoke(app, ["train", str(config)])
    assert second.exit_code == 0, second.output
    assert "resuming from" in second.output and "1 of 1 epochs done" in second.output
    again = json.loads(remote.read_text(f"{url}/summary.json"))
    assert again["test"] == summary["test"]

    # flipless predict on the config reads the model the run uploaded
    predictions = tmp_path / "new.csv"
    predicted = runner.invoke(app, ["predict", str(config), "--out", str(predictions)])
    assert predicted.exit_code == 0, predicted.output
    assert len(predictions.read_text().splitlines()) == test.total + 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_failed_remote_run_keeps_its_checkpoints_but_no_summary(tmp_path, monkeypatch):
    url = f"memory://runs-{uuid.uuid4().hex[:8]}/fd"
    config = tmp_path / "run.yaml"
    config.write_text(RUN.format(output_dir=url))

    def broken(*args, **kwargs):
        raise RuntimeError("measuring failed")

    monkeypatch.setattr(recipe, "compare", broken)  # after training, before the summary
    runner = CliRunner()
    failed = runner.invoke(app, ["train", str(config)])
    assert isinstance(failed.exception, RuntimeError)
    listed = _listing(url)
    assert "new/checkpoint.pt" in listed and "old.safetensors" in listed
    assert "summary.json" not in listed and "model.safetensors" not in listed
    monkeypatch.undo()
    resumed = runner.invoke(app, ["train", str(config)])
    assert resumed.exit_code == 0, resumed.output
    assert "1 of 1 epochs done" in resumed.output  # the uploaded checkpoint was resumed
    assert _listing(url) >= RUN_FILES


def test_an_output_dir_url_naming_a_file_is_refused():
    url = f"memory://runs-{uuid.uuid4().hex[:8]}/taken"
    check_output_dir(url, "output_dir")  # nothing there yet: fine
    remote.write_text(url, "a file")
    with pytest.raises(InputError, match=r"output_dir: memory://.*/taken is a file"):
        check_output_dir(url, "output_dir")
