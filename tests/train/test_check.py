"""check_run_config: every section of a run config checked before anything runs."""

from __future__ import annotations

import pytest

from flipless.errors import InputError, MissingFileError
from flipless.train.check import check_run_config
from flipless.train.config import parse_config
from flipless.train.recipe import run_config


def config(tmp_path, **sections):
    document = {
        "output_dir": str(tmp_path / "run"),
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [8]},
        "old": {"train_epochs": 1},
        "train": {"epochs": 1, "progress": "none"},
    }
    for key, value in sections.items():
        document[key] = value
    return parse_config(document)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"loss": {"preset": "fd-kl", "weight": "heavy"}}, "loss: Loss 'fd-kl': weight='heavy'"),
        ({"loss": {"preset": "ldi", "mix": 2}}, r"loss: .*mix=2"),
        ({"loss": {"preset": "cross-entropy", "weight": 1}}, "loss: plain cross-entropy"),
        ({"optimizer": {"lr": -1}}, r"optimizer.lr: -1.0; expected a learning rate > 0"),
        ({"optimizer": {"name": "sgd", "momentum": 1.5}}, r"optimizer.momentum: 1.5"),
        ({"optimizer": {"weight_decay": -0.1}}, r"optimizer.weight_decay: -0.1"),
        ({"model": {"name": "mlp", "hiden": [8]}}, "model: mlp has no setting 'hiden'"),
        ({"model": {"name": "nosuch"}}, "model.name: Unknown model 'nosuch'"),
    ],
)
def test_a_bad_value_is_an_input_error_naming_its_key(tmp_path, sections, message):
    with pytest.raises(InputError, match=message):
        check_run_config(config(tmp_path, **sections))


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("mine")
    run = config(tmp_path, output_dir=str(tmp_path / "taken"))
    with pytest.raises(InputError, match=r"output_dir: .*taken is a file"):
        check_run_config(run)
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_missing_old_checkpoint_is_a_missing_file(tmp_path):
    run = config(tmp_path, old={"checkpoint": str(tmp_path / "old.safetensors")})
    with pytest.raises(MissingFileError, match=r"old.checkpoint: .*old.safetensors does not exist"):
        check_run_config(run)


def test_run_config_checks_before_it_writes_or_trains(tmp_path):
    run = config(tmp_path, loss={"preset": "fd-kl", "temperature": "hot"})
    with pytest.raises(InputError, match="temperature='hot'"):
        run_config(run)
    assert not (tmp_path / "run").exists()  # no config.json, no old model


def test_a_good_config_passes(tmp_path):
    check_run_config(config(tmp_path, loss={"preset": "bct"}, optimizer={"lr": 0.1}))
