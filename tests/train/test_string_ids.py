"""String ids of a user's data come out as the strings, wherever a user reads ids: `flipless
train`'s test comparison and its instances file, every sweep point's comparisons, the report.

The ids are numbered internally by their sorted position (``Splits.id_names``); here they are
written in another order than sorted, so that a comparison keyed by those numbers, or by row
positions, would name the wrong rows.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from flipless.cli import app
from flipless.data.columns import Splits
from flipless.data.labeled import LabeledData
from flipless.data.scenario import UpdateScenario, make_update_scenario
from flipless.errors import InputError, MismatchError
from flipless.metrics.comparison import Comparison
from flipless.report.payload import build_payload
from flipless.report.sources import load_source
from flipless.sweep.config import parse_sweep_config
from flipless.sweep.runner import run_sweep
from flipless.train import MLP, TrainSettings, fit
from flipless.train.config import load_config
from flipless.train.recipe import run_config

CLASSES = ("cat", "dog", "eel")
SPLIT_SIZES = {"train": 90, "validation": 30, "test": 30}

CONFIG = """
seed = 0
output_dir = "run"

[data]
name = "table"
path = "rows.csv"

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
batch_size = 32
progress = "none"
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder with ``rows.csv`` (the rows of :func:`rows`) and ``run.toml``."""
    folder = tmp_path_factory.mktemp("string-ids")
    (folder / "run.toml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def rows(folder) -> pd.DataFrame:
    """150 rows of 4 features, 3 separable classes, ids like "u-4b1d" in no sorted order."""
    generator = np.random.default_rng(3)
    size = sum(SPLIT_SIZES.values())
    labels = np.arange(size) % len(CLASSES)
    features = generator.normal(size=(size, 4)) + 2.0 * np.eye(len(CLASSES), 4)[labels]
    codes = generator.choice(16**4, size=size, replace=False)
    frame = pd.DataFrame(features, columns=["a", "b", "c", "d"])
    frame.insert(0, "id", [f"u-{code:04x}" for code in codes])
    frame["label"] = [CLASSES[label] for label in labels]
    frame["split"] = np.repeat(list(SPLIT_SIZES), list(SPLIT_SIZES.values()))
    assert not frame["id"].is_monotonic_increasing
    frame.to_csv(folder / "rows.csv", index=False)
    return frame


def check_ids_name_their_rows(comparison: Comparison, rows: pd.DataFrame, split: str) -> None:
    """The comparison holds exactly the split's rows, each under its own string id."""
    instances = comparison.instances
    expected = rows[rows["split"] == split].set_index("id")["label"]
    assert sorted(instances.ids.tolist()) == sorted(expected.index)
    assert all(isinstance(value, str) for value in instances.ids.tolist())
    names = [CLASSES[label] for label in instances.labels.tolist()]  # sorted names
    assert names == expected.loc[instances.ids.tolist()].tolist()


@pytest.fixture(scope="module")
def trained(rows, folder) -> Path:
    """The output folder of `flipless train` on the rows."""
    result = CliRunner().invoke(app, ["train", str(folder / "run.toml")])
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_flipless_train_writes_the_string_ids(rows, trained):
    comparison = Comparison.from_json(str(trained / "test_comparison.json"))
    check_ids_name_their_rows(comparison, rows, "test")
    instances = pd.read_parquet(trained / "test_comparison.instances.parquet")
    assert sorted(instances.iloc[:, 0]) == sorted(rows.loc[rows["split"] == "test", "id"])
    negative_flips = comparison.negative_flip_ids()
    assert set(negative_flips) <= set(rows["id"])


def test_the_runs_validation_comparison_names_the_string_ids(rows, folder, tmp_path):
    # what MLflow logs as validation_comparison and run_config returns
    config = load_config(folder / "run.toml")
    outcome = run_config(dataclasses.replace(config, output_dir=str(tmp_path / "run")))
    check_ids_name_their_rows(outcome.result.comparison, rows, "validation")


def test_the_report_of_a_run_shows_the_string_ids(rows, trained):
    payload = build_payload(load_source(trained / "test_comparison.json"))
    shown = payload.main["dataset"]["ids"]
    assert sorted(shown) == sorted(rows.loc[rows["split"] == "test", "id"])


def test_every_sweep_point_measures_with_the_string_ids(rows, folder, tmp_path):
    document = tomllib.loads(CONFIG)
    document["data"]["path"] = str(folder / "rows.csv")
    del document["output_dir"]  # a sweep writes beside its store
    document["sweep"] = {
        "store": str(tmp_path / "sweep" / "results.jsonl"),
        "seeds": [0],
        "threads": 1,
        "methods": [{"method": "bcwi", "strengths": [0.5]}],
    }
    outcome = run_sweep(parse_sweep_config(document), quiet=True)
    assert {record["kind"] for record in outcome.records} == {"loss", "interpolation"}
    for record in outcome.records:
        comparison = Comparison.from_json(str(tmp_path / "sweep" / record["comparison_path"]))
        check_ids_name_their_rows(comparison, rows, "test")
        assert record["metrics"]["test"]["size"] == SPLIT_SIZES["test"]


# ------------------------------------------------------------------ the scenario keeps them


def labeled(ids: list[int], name: str) -> LabeledData:
    inputs = np.arange(len(ids) * 2, dtype=np.float32).reshape(len(ids), 2)
    return LabeledData.from_arrays(
        inputs, np.array(ids) % 2, np.array(ids), class_names=("x", "y"), name=name
    )


def test_make_update_scenario_keeps_the_id_names_of_its_splits():
    names = tuple(f"id-{letter}" for letter in "abcdefghijkl")
    splits = Splits(
        {"train": labeled(list(range(8)), "train"), "test": labeled([8, 9], "t")}, names
    )
    scenario = make_update_scenario(splits, old_fraction=0.5, validation_fraction=0.25, seed=1)
    assert scenario.id_names == names
    for data in scenario.splits().values():
        got = scenario.original_ids(data.ids)
        assert got.tolist() == [names[number] for number in data.ids.tolist()]
    assert scenario.original_ids(np.array([9, 0])).tolist() == ["id-j", "id-a"]


def test_integer_ids_stay_integers():
    splits = {"train": labeled(list(range(8)), "train"), "test": labeled([8, 9], "test")}
    scenario = make_update_scenario(splits, old_fraction=0.5, seed=1)
    assert scenario.id_names is None
    ids = scenario.original_ids(scenario.test.ids)
    assert ids.dtype == np.int64 and ids.tolist() == [8, 9]


def test_id_names_must_name_every_sample():
    parts = {
        "old_train": labeled([0, 1], "old"),
        "new_train": labeled([0, 1, 2], "new"),
        "validation": labeled([3], "validation"),
        "test": labeled([7], "test"),
    }
    with pytest.raises(
        MismatchError, match=r"test has sample ids 7 but id_names names only 4 samples"
    ):
        UpdateScenario(**parts, seed=None, description="", id_names=("a", "b", "c", "d"))
    with pytest.raises(InputError, match="expected a tuple of strings"):
        UpdateScenario(**parts, seed=None, description="", id_names=tuple(range(8)))


def test_fit_names_the_validation_samples_by_id_names():
    names = tuple(f"id-{letter}" for letter in "abcdefghijkl")
    train, validation = labeled(list(range(8)), "train"), labeled([11, 8, 10], "validation")
    torch.manual_seed(0)
    old = MLP(2, 2, hidden=(4,))
    settings = TrainSettings(epochs=1, batch_size=4, progress="none")
    result = fit(
        MLP(2, 2, hidden=(4,)), train, validation, old_model=old, id_names=names, settings=settings
    )
    assert result.comparison.instances.ids.tolist() == ["id-l", "id-i", "id-k"]
    with pytest.raises(MismatchError, match=r"sample ids up to 11 \(from 8\) but id_names names 9"):
        fit(MLP(2, 2, hidden=(4,)), train, validation, old_model=old, id_names=names[:9])
