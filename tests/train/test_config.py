"""Run configs (TOML / YAML): checked keys and types, and `flipless train` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flipless import Comparison
from flipless.cli import app
from flipless.errors import FileFormatError, InputError
from flipless.inference.predict import predicted_classes
from flipless.models import load_model
from flipless.train.config import load_config, parse_config

TOML = """
seed = 3
output_dir = "runs/fd"

[data]
name = "digits"
old_fraction = 0.25

[model]
name = "mlp"
hidden = [32]

[old]
train_epochs = 2

[loss]
preset = "fd-kl"
teacher = "cached"
temperature = 10

[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9

[train]
epochs = 2
batch_size = 64
select = "nfr-within:0.01"
progress = "none"
"""

YAML = """
output_dir: out
data: {name: digits}
model: {name: mlp, hidden: [16]}
old: {train_epochs: 1}
loss: {preset: ldi, margin: 0.25}
optimizer: {name: adamw, lr: 0.01}
train: {epochs: 1, batch_size: 128, progress: none}
"""


def test_a_toml_config_is_read_checked_and_resolved(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    config = load_config(path)
    assert config.seed == 3 and config.data.old_fraction == 0.25
    assert config.model.settings == {"hidden": [32]}
    assert config.loss.overrides == {"temperature": 10} and config.loss.teacher == "cached"
    assert config.optimizer.lr == 0.05 and config.train.epochs == 2
    assert config.train.select == "nfr-within:0.01"
    assert Path(config.output_dir) == (tmp_path / "runs" / "fd").resolve()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"epoch": 3}}, r"train\.epoch: unknown key"),
        ({"train": {"epochs": "ten"}}, r"train\.epochs: expected an integer; got 'ten'"),
        ({"train": {"epochs": True}}, r"train\.epochs: expected an integer"),
        ({"optimizer": {"lr": "fast"}}, r"optimizer\.lr: expected a number"),
        ({"data": {"old_classes": [1, 2]}}, r"data\.old_classes\[0\]: expected a string"),
        ({"learning_rate": 0.1}, r"learning_rate: unknown key"),
        ({"train": 5}, r"train: expected a table"),
        ({"data": {"name": "imagenet"}}, r"data\.name: 'imagenet'"),
        ({"data": {"name": "banking77"}}, r"data\.path: the banking77 data set needs a path"),
        ({"optimizer": {"name": "lion"}}, r"optimizer\.name"),
        ({"loss": {"preset": "fd-xx"}}, r"loss\.preset: 'fd-xx'"),
        ({"old": {}}, r"old: the update is measured against the old model"),
        ({"old": {"train_epochs": 1, "checkpoint": "x"}}, r"either checkpoint or train_epochs"),
        ({"train": {"precision": "fp8"}}, r"train: precision='fp8'"),
        ({"output_dir": None}, r"output_dir"),
    ],
)
def test_wrong_keys_and_types_name_the_key(change, message):
    document = {
        "output_dir": "out",
        "data": {"name": "digits"},
        "old": {"train_epochs": 1},
        "loss": {"preset": "fd-kl"},
    }
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict) and key != "old":
            document[key] = {**document[key], **value}
        elif value is None:
            del document[key]
        else:
            document[key] = value
    with pytest.raises(InputError, match=message):
        parse_config(document)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileFormatError, match="no config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("output_dir = ")
    with pytest.raises(FileFormatError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2")
    with pytest.raises(FileFormatError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "run.ini").write_text("")
    with pytest.raises(FileFormatError, match="unknown config format"):
        load_config(tmp_path / "run.ini")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flipless_train_runs_a_config_end_to_end(tmp_path):
    runner = CliRunner()
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "fd"
    assert "kept epoch" in result.output
    for name in ("config.json", "old.safetensors", "teacher.safetensors", "model.safetensors"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    test = Comparison.from_json(str(out / "test_comparison.json"))
    assert summary["test"]["negative_flip_rate"] == pytest.approx(test.negative_flip_rate)
    assert len(summary["history"]) == 2 and summary["rule"] == "nfr-within:0.01"
    # one numbering, from 1: the printed kept epoch, summary.json's, and the history's
    printed = re.search(r"kept epoch (\d+) by rule", result.stdout)
    assert printed is not None and int(printed.group(1)) == summary["kept_epoch"]
    assert 1 <= summary["kept_epoch"] <= 2
    assert [record["epoch"] for record in summary["history"]] == [1, 2]
    # the saved models reproduce the test comparison
    from flipless.train.config import load_config as load
    from flipless.train.recipe import load_scenario

    scenario = load_scenario(load(path))
    old, new = load_model(out / "old.safetensors"), load_model(out / "model.safetensors")
    labels = scenario.test.labels.numpy()
    again = Comparison.from_json(str(out / "test_comparison.json"))
    from flipless import compare

    redone = compare(
        predicted_classes(old, scenario.test), predicted_classes(new, scenario.test), labels
    )
    assert (
        redone.negative_flips == again.negative_flips and redone.accuracy_new == again.accuracy_new
    )

    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(YAML)
    first = runner.invoke(app, ["train", str(yaml_path), "--progress", "log"])
    assert first.exit_code == 0 and "epoch 1/1  loss" in first.output
    second = runner.invoke(app, ["train", str(yaml_path), "--progress", "log"])
    assert "resuming from" in second.output and "1 of 1 epochs done" in second.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.replace("train: {epochs: 1", "train: {epochs: one"))
    failed = runner.invoke(app, ["train", str(bad)])
    assert failed.exit_code == 2 and "train.epochs: expected an integer" in failed.output
    assert torch.get_num_threads() >= 1
