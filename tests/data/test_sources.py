"""The [data] section: config checks, splits of every source, the update scenario, plug-ins,
guessing a source from a path, the check before training, and `flipless train` on a CSV."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from flipless.data.loaders import load_digits
from flipless.data.scenario import make_update_scenario
from flipless.data.sources import (
    DataConfig,
    check_data,
    check_data_config,
    data_config_from_path,
    load_scenario,
    load_splits,
)
from flipless.errors import FileFormatError, InputError, MismatchError
from flipless.train.config import parse_config


def blobs_csv(path: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """Three separable classes of 2-D points, ``per_split[name]`` rows of each class per split,
    ids 100, 101, … in file order, a split column."""
    rng = np.random.default_rng(seed)
    centres = {"left": (-3.0, 0.0), "right": (3.0, 0.0), "top": (0.0, 3.0)}
    lines = ["id,x,y,label,split"]
    number = 100
    for split, count in per_split.items():
        for _ in range(count):
            for label, (cx, cy) in centres.items():
                x, y = rng.normal((cx, cy), 0.5)
                lines.append(f"{number},{x:.4f},{y:.4f},{label},{split}")
                number += 1
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- DataConfig


def test_name_defaults_to_digits_or_target():
    assert DataConfig().name == "digits"
    assert DataConfig(target="pkg.mod:load").name == "target"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": "imagenet"}, r"data\.name: 'imagenet'"),
        ({"name": "table"}, r"data\.path: the table data set needs a path"),
        ({"name": "table", "target": "a:b", "path": "x"}, r"data\.target: give a target"),
        ({"target": "a:b", "path": "x"}, r"data\.path: a target reads its own data"),
        ({"id_column": "key"}, r"data\.id_column: applies to table and hf-disk data only"),
        ({"label_column": "y"}, r"data\.label_column: applies to table and hf-disk"),
        ({"name": "hf-disk", "path": "x", "format": "csv"}, r"data\.format: applies to table"),
        ({"args": {"a": 1}}, r"data\.args: applies to target data only"),
        ({"classes": ["a"]}, r"data\.classes: applies to table, hf-disk and target"),
        ({"image_size": 8}, r"data\.image_size: applies to image data only"),
        ({"name": "table", "path": "x", "format": "xlsx"}, r"data\.format: 'xlsx'"),
        ({"old_split": "v1", "old_fraction": 0.3}, r"data\.old_fraction: .*not both"),
        ({"old_split": "train"}, r"data\.old_split: 'train' is also the whole data\.new_split"),
        ({"new_split": ["a", "a"]}, r"data\.new_split: .*distinct"),
        ({"old_fraction": 1.5}, r"data\.old_fraction=1\.5"),
        ({"validation_fraction": 1.0}, r"data\.validation_fraction=1\.0"),
        ({"test_fraction": 0}, r"data\.test_fraction=0"),
        ({"name": "table", "path": "x", "input_type": "audio"}, r"data\.input_type='audio'"),
    ],
)
def test_config_errors_name_the_key(values, message):
    with pytest.raises(InputError, match=message):
        check_data_config(DataConfig(**values))


def test_a_config_file_resolves_the_data_path_and_checks_types(tmp_path):
    document = {
        "output_dir": "out",
        "data": {
            "name": "table",
            "path": "rows.csv",
            "old_split": "train_v1",
            "new_split": ["train", "extra"],
            "features": ["x", "y"],
            "image_size": [4, 5],
        },
        "old": {"train_epochs": 1},
    }
    config = parse_config(document, base=tmp_path)
    assert config.data.path == str((tmp_path / "rows.csv").resolve())
    assert config.data.new_splits == ("train", "extra")
    assert config.data.image_size == [4, 5]
    document["data"]["features"] = "x"
    with pytest.raises(InputError, match=r"data\.features: expected a list of strings"):
        parse_config(document)


# --------------------------------------------------------------------------- scenarios


def test_shipped_data_gives_the_same_scenario_as_before():
    scenario = load_scenario(DataConfig(old_fraction=0.25), seed=4)
    direct = make_update_scenario(load_digits(seed=4), old_fraction=0.25, seed=4)
    for field, data in scenario.splits().items():
        assert torch.equal(data.ids, direct.splits()[field].ids), field
    assert scenario.description == direct.description
    default = load_scenario(DataConfig(), seed=0)
    expected = make_update_scenario(load_digits(seed=0), old_fraction=0.3, seed=0)
    assert torch.equal(default.old_train.ids, expected.old_train.ids)


def test_old_split_and_new_split_come_from_the_data(tmp_path):
    path = blobs_csv(tmp_path / "rows.csv", {"train_v1": 2, "train": 4, "validation": 1, "test": 2})
    data = DataConfig(name="table", path=str(path), old_split="train_v1")
    scenario = load_scenario(data, seed=0)
    # ids in file order: train_v1 rows 100–105, train 106–117, validation 118–120, test 121–126
    assert scenario.old_train.ids.tolist() == list(range(100, 106))
    assert scenario.new_train.ids.tolist() == list(range(106, 118))
    assert scenario.validation.ids.tolist() == list(range(118, 121))
    assert scenario.test.ids.tolist() == list(range(121, 127))
    assert scenario.class_names == ("left", "right", "top")
    assert "split 'train_v1'" in scenario.description
    both = load_scenario(
        DataConfig(
            name="table", path=str(path), old_split="train_v1", new_split=["train_v1", "train"]
        )
    )
    assert both.new_train.ids.tolist() == list(range(100, 118))


def test_missing_validation_and_test_are_cut_from_the_new_rows_only(tmp_path):
    path = blobs_csv(tmp_path / "rows.csv", {"train_v1": 2, "train": 10})
    data = DataConfig(
        name="table",
        path=str(path),
        old_split="train_v1",
        new_split=["train_v1", "train"],
        test_fraction=0.2,
        validation_fraction=0.25,
    )
    scenario = load_scenario(data, seed=3)
    old_ids = set(range(100, 106))
    new_rows = set(range(106, 136))  # 10 per class
    test, validation = set(scenario.test.ids.tolist()), set(scenario.validation.ids.tolist())
    # test: 20 % of the 10 new rows of each class = 2 per class; validation: 25 % of the
    # remaining 8 = 2 per class; neither touches the old model's rows
    assert scenario.test.class_counts().tolist() == [2, 2, 2]
    assert scenario.validation.class_counts().tolist() == [2, 2, 2]
    assert test | validation <= new_rows and not (test & validation)
    assert set(scenario.new_train.ids.tolist()) == (old_ids | new_rows) - test - validation
    again = load_scenario(data, seed=3)
    assert torch.equal(again.test.ids, scenario.test.ids)
    other = load_scenario(data, seed=4)
    assert not torch.equal(other.test.ids, scenario.test.ids)
    same = tmp_path / "same.csv"  # the new split holds only the old rows again
    same.write_text("id,x,label,split\n1,0.0,a,v1\n2,1.0,b,v1\n1,0.0,a,train\n2,1.0,b,train\n")
    with pytest.raises(InputError, match=r"no test split and .* 0 row\(s\) outside"):
        load_scenario(DataConfig(name="table", path=str(same), old_split="v1"))


def test_old_fraction_draws_from_the_new_split(tmp_path):
    path = blobs_csv(tmp_path / "rows.csv", {"train": 10, "test": 2})
    scenario = load_scenario(DataConfig(name="table", path=str(path), old_fraction=0.5), seed=0)
    assert len(scenario.test) == 6
    assert len(scenario.validation) + len(scenario.new_train) == 30
    assert set(scenario.old_train.ids.tolist()) <= set(scenario.new_train.ids.tolist())
    assert scenario.old_train.class_counts().tolist() == [4, 4, 4]  # half of 8 per class


def test_old_fraction_keeps_the_datas_validation_split(tmp_path):
    path = blobs_csv(tmp_path / "rows.csv", {"train": 4, "val": 1, "test": 1})
    scenario = load_scenario(DataConfig(name="table", path=str(path)), seed=0)
    assert scenario.validation.ids.tolist() == [112, 113, 114]  # the rows marked val
    assert len(scenario.new_train) == 12 and len(scenario.test) == 3
    assert len(scenario.old_train) == 3  # 30 % of 4 per class, rounded: 1 per class


def test_unknown_splits_are_named_with_the_ones_there(tmp_path):
    path = blobs_csv(tmp_path / "rows.csv", {"train": 2, "test": 1})
    with pytest.raises(
        InputError, match=r"data\.old_split: the data has no split 'v1'.*'test', 'train'"
    ):
        load_scenario(DataConfig(name="table", path=str(path), old_split="v1"))
    with pytest.raises(InputError, match=r"data\.new_split: the data has no split 'all'"):
        check_data(DataConfig(name="table", path=str(path), new_split="all"))


def test_shared_ids_between_old_and_test_are_refused(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,x,label,split\n1,0.0,a,v1\n2,1.0,b,train\n3,2.0,a,train\n1,0.5,a,test\n")
    with pytest.raises(MismatchError, match="old_train and test share 1 id"):
        load_scenario(DataConfig(name="table", path=str(path), old_split="v1"))


# --------------------------------------------------------------------------- targets


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An importable module ``user_data_plugin`` with data functions."""
    (tmp_path / "user_data_plugin.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def tuples(size=4):
                x = np.arange(size * 2, dtype=float).reshape(size, 2)
                return {
                    "train": (x, ["b", "a"] * (size // 2)),
                    "dev": (x[:2], ["a", "b"], [50, 51]),
                }

            def texts():
                return {"train": (["hi", "yo"], [0, 1]), "test": (["hey"], [1])}

            def wrong():
                return [1, 2]

            def failing(path):
                raise FileNotFoundError(path)

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_data_plugin"
    sys.modules.pop("user_data_plugin", None)


def test_a_target_returns_tuples_with_names_or_indices(plugin):
    splits = load_splits(DataConfig(target=f"{plugin}:tuples", args={"size": 4}))
    assert list(splits) == ["train", "validation"]
    train = splits["train"]
    assert train.class_names == ("a", "b") and train.labels.tolist() == [1, 0, 1, 0]
    assert train.ids.tolist() == [0, 1, 2, 3]
    assert splits["validation"].ids.tolist() == [50, 51]
    np.testing.assert_array_equal(train.inputs.numpy(), np.arange(8).reshape(4, 2))
    texts = load_splits(DataConfig(target=f"{plugin}:texts", classes=["neg", "pos"]))
    assert texts["train"].inputs == ["hi", "yo"] and texts["test"].ids.tolist() == [2]
    assert texts["test"].class_names == ("neg", "pos")


def test_a_target_returning_labeled_data_is_checked_for_one_label_space(tmp_path, monkeypatch):
    module = tmp_path / "labeled_plugin.py"
    module.write_text(
        "import torch\nfrom flipless.data.labeled import LabeledData\n"
        "def load():\n"
        "    a = LabeledData.from_arrays(torch.zeros(2, 1), [0, 1], class_names=['x', 'y'])\n"
        "    b = LabeledData.from_arrays(torch.zeros(1, 1), [0], [9], class_names=['x', 'z'])\n"
        "    return {'train': a, 'test': b}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MismatchError, match=r"split 'test' has classes 'x', 'z'"):
        load_splits(DataConfig(target="labeled_plugin:load"))
    sys.modules.pop("labeled_plugin", None)


def test_target_errors(plugin):
    with pytest.raises(InputError, match=r"returned list; expected a non-empty dict"):
        load_splits(DataConfig(target=f"{plugin}:wrong"))
    with pytest.raises(InputError, match=r"raised FileNotFoundError: /no/such.*data\.args"):
        load_splits(DataConfig(target=f"{plugin}:failing", args={"path": "/no/such"}))
    with pytest.raises(InputError, match=r"unexpected keyword argument"):
        load_splits(DataConfig(target=f"{plugin}:texts", args={"size": 1}))
    with pytest.raises(InputError, match="not a function"):
        load_splits(DataConfig(target=f"{plugin}:NOT_CALLABLE"))
    with pytest.raises(InputError, match="not a function"):
        check_data(DataConfig(target=f"{plugin}:NOT_CALLABLE"))
    with pytest.raises(InputError, match=r"split 'train': labels 'b' are not classes"):
        load_splits(DataConfig(target=f"{plugin}:tuples", classes=["a", "b2"]))
    with pytest.raises(InputError, match=r"module 'no_such_plugin_xyz' cannot be imported"):
        check_data(DataConfig(target="no_such_plugin_xyz:load"))


# --------------------------------------------------------------------------- from a path


def test_data_config_from_path_guesses_the_source(tmp_path):
    table = blobs_csv(tmp_path / "rows.csv", {"train": 1})
    assert data_config_from_path(table).name == "table"
    assert data_config_from_path(table).path == str(table.resolve())
    assert data_config_from_path(tmp_path, label_column="label").name == "table"
    assert data_config_from_path("digits") == DataConfig(name="digits")
    cifar = data_config_from_path(f"cifar10:{tmp_path}")
    assert (cifar.name, cifar.path) == ("cifar10", str(tmp_path.resolve()))
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    assert data_config_from_path(images).name == "image-folder"
    hf = tmp_path / "saved"
    hf.mkdir()
    (hf / "dataset_dict.json").write_text('{"splits": ["train"]}')
    assert data_config_from_path(hf).name == "hf-disk"
    with pytest.raises(FileFormatError, match="no such file or folder"):
        data_config_from_path(tmp_path / "missing.csv")
    with pytest.raises(InputError, match=r"unknown data option\(s\) \['colour'\]"):
        data_config_from_path(table, colour="red")
    with pytest.raises(InputError, match=r"data\.id_column: applies to table and hf-disk"):
        data_config_from_path("digits", id_column="key")
    (tmp_path / "notes.md").write_text("")
    with pytest.raises(FileFormatError, match="not a data source flipless can read"):
        data_config_from_path(tmp_path / "notes.md")


# --------------------------------------------------------------------------- check_data


def test_check_data_reports_what_it_found_without_training(tmp_path):
    path = blobs_csv(tmp_path / "rows.csv", {"train_v1": 1, "train": 2, "test": 1})
    summary = check_data(DataConfig(name="table", path=str(path), old_split="train_v1"))
    assert summary.splits == {"train": 6, "test": 3, "train_v1": 3}
    assert summary.class_names == ("left", "right", "top") and summary.input_type == "features"
    with pytest.raises(InputError, match=r"data\.old_classes: \['middle'\] are not classes"):
        check_data(DataConfig(name="table", path=str(path), old_classes=["middle"]))
    with pytest.raises(InputError, match=r"no column 'intent' \(label_column\)"):
        check_data(DataConfig(name="table", path=str(path), label_column="intent"))
    with pytest.raises(FileFormatError, match=r"data\.path: .* does not exist"):
        check_data(DataConfig(name="banking77", path=str(tmp_path / "missing")))
    assert check_data(DataConfig()).splits == {}


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_flipless_train_on_a_csv_of_features(tmp_path):
    from typer.testing import CliRunner

    from flipless.cli import app

    (tmp_path / "data").mkdir()
    blobs_csv(tmp_path / "data" / "rows.csv", {"train_v1": 4, "train": 12, "test": 4})
    config = tmp_path / "run.toml"
    config.write_text(
        textwrap.dedent(
            """
            output_dir = "out"
            [data]
            name = "table"
            path = "data/rows.csv"
            old_split = "train_v1"
            [model]
            name = "mlp"
            hidden = [8]
            [old]
            train_epochs = 2
            [optimizer]
            lr = 0.05
            [train]
            epochs = 2
            batch_size = 16
            progress = "none"
            """
        )
    )
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    splits = summary["scenario"]["splits"]
    assert splits["old_train"]["size"] == 12 and splits["test"]["size"] == 12
    assert splits["new_train"]["size"] + splits["validation"]["size"] == 36
    assert summary["scenario"]["class_names"] == ["left", "right", "top"]
    # a bad column fails before anything is trained, with exit status 2 and no traceback
    config.write_text(config.read_text().replace('old_split = "train_v1"', 'label_column = "y2"'))
    failed = CliRunner().invoke(app, ["train", str(config)])
    assert failed.exit_code == 2 and "no column 'y2' (label_column)" in failed.output
    assert "Traceback" not in failed.output


@pytest.mark.timeout(60)
def test_flipless_sweep_checks_the_data_before_the_old_model_trains(tmp_path):
    from typer.testing import CliRunner

    from flipless.cli import app

    blobs_csv(tmp_path / "rows.csv", {"train": 2, "test": 1})
    config = tmp_path / "sweep.toml"
    config.write_text(
        textwrap.dedent(
            """
            [data]
            name = "table"
            path = "rows.csv"
            label_column = "kind"
            [model]
            name = "mlp"
            [old]
            train_epochs = 1
            [train]
            epochs = 1
            progress = "none"
            [sweep]
            store = "runs/results.jsonl"
            seeds = [0]
            [[sweep.methods]]
            method = "fd-kl"
            strengths = [1]
            """
        )
    )
    result = CliRunner().invoke(app, ["sweep", str(config), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "no column 'kind' (label_column)" in result.output
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
