"""Tests of flipless.data.scenario: UpdateScenario and its builders."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flipless.data.labeled import LabeledData
from flipless.data.loaders import load_arrays, load_digits
from flipless.data.scenario import (
    UpdateScenario,
    make_update_scenario,
    massive_update_scenario,
)
from flipless.errors import FileFormatError, InputError, MismatchError

MASSIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "massive-add-data"


def four_classes(per_class: int = 50, test_per_class: int = 5, dev: bool = False) -> dict:
    """Train: ``per_class`` samples of each of 4 classes (input = position); test likewise."""
    train_labels = np.repeat(np.arange(4), per_class)
    test_labels = np.repeat(np.arange(4), test_per_class)
    splits = {
        "train": (np.arange(train_labels.size, dtype=np.float32)[:, None], train_labels),
        "test": (np.zeros((test_labels.size, 1)), test_labels),
    }
    if dev:
        splits["dev"] = (np.zeros((8, 1)), np.repeat(np.arange(4), 2))
    return load_arrays(class_names=["w", "x", "y", "z"], name="toy", **splits)


def ids(data: LabeledData) -> set[int]:
    return set(data.ids.tolist())


# --------------------------------------------------------------------------- make_update_scenario


def test_sizes_by_hand_and_no_leak() -> None:
    splits = four_classes()
    scenario = make_update_scenario(splits, old_fraction=0.3, validation_fraction=0.2, seed=0)
    # per class: validation 0.2·50 = 10, new_train 40, old_train ⌊0.3·40 + ½⌋ = 12
    assert scenario.validation.class_counts().tolist() == [10] * 4
    assert scenario.new_train.class_counts().tolist() == [40] * 4
    assert scenario.old_train.class_counts().tolist() == [12] * 4
    assert scenario.test is splits["test"]
    assert ids(scenario.validation) | ids(scenario.new_train) == ids(splits["train"])
    assert not ids(scenario.validation) & ids(scenario.new_train)
    assert not ids(scenario.test) & (ids(scenario.new_train) | ids(scenario.validation))
    assert ids(scenario.old_train) <= ids(scenario.new_train)
    assert scenario.old_classes == (0, 1, 2, 3) and scenario.seed == 0
    assert scenario.class_names == ("w", "x", "y", "z") and scenario.num_classes == 4
    assert "30% of new_train (all classes, 48 samples)" in scenario.description
    assert "validation 20% of train (40)" in scenario.description


def test_a_dev_split_is_the_validation_and_train_stays_whole() -> None:
    splits = four_classes(dev=True)
    scenario = make_update_scenario(splits, validation_fraction=0.5, seed=1)
    assert scenario.validation is splits["dev"]
    assert scenario.new_train is splits["train"]
    assert "the 'dev' split (8)" in scenario.description
    splits["val"] = splits.pop("dev")
    assert make_update_scenario(splits).validation is splits["val"]
    splits["dev"] = splits["val"]
    with pytest.raises(InputError, match="both 'dev' and 'val'"):
        make_update_scenario(splits)


def test_old_classes_restrict_the_old_model_by_index_or_name() -> None:
    splits = four_classes()
    by_index = make_update_scenario(splits, old_classes=[2, 0], seed=5)
    by_name = make_update_scenario(splits, old_classes=["y", "w"], seed=5)
    assert by_index.old_classes == by_name.old_classes == (0, 2)
    assert by_index.old_train.class_counts().tolist() == [12, 0, 12, 0]
    assert by_index.old_train.ids.tolist() == by_name.old_train.ids.tolist()
    assert by_index.new_train.class_counts().tolist() == [40] * 4  # the new model sees all
    assert "2 of 4 classes" in by_index.description


def test_same_seed_same_ids_and_other_seeds_differ() -> None:
    splits = four_classes()
    first, again = make_update_scenario(splits, seed=7), make_update_scenario(splits, seed=7)
    for field in ("old_train", "new_train", "validation"):
        assert getattr(first, field).ids.tolist() == getattr(again, field).ids.tolist()
    assert first.to_dict() == again.to_dict()
    other = make_update_scenario(splits, seed=8)
    assert other.validation.ids.tolist() != first.validation.ids.tolist()


def test_old_fraction_one_gives_the_old_model_all_of_new_train() -> None:
    scenario = make_update_scenario(four_classes(), old_fraction=1.0)
    assert scenario.old_train.ids.tolist() == scenario.new_train.ids.tolist()


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"old_fraction": 0}, r"old_fraction=0; expected a number in \(0, 1\]"),
        ({"old_fraction": 1.01}, r"old_fraction=1\.01; expected"),
        ({"validation_fraction": 1.0}, r"validation_fraction=1\.0; expected .*\(0, 1\)"),
        ({"validation_fraction": -0.2}, r"validation_fraction=-0\.2"),
        ({"seed": -1}, "seed=-1; expected a non-negative integer"),
        ({"seed": 1.5}, r"seed=1\.5"),
        ({"old_classes": [4]}, r"old_classes holds 4; expected class indices in \[0, 4\)"),
        ({"old_classes": ["v"]}, "old_classes names 'v', which is not a class"),
        ({"old_classes": []}, "old_classes is empty"),
        ({"old_classes": [1, "x"]}, "repeats a class"),
        ({"old_classes": "w"}, "expected a sequence of class indices or class names"),
        ({"old_classes": [1.0]}, r"old_classes holds 1\.0; expected a class index or name"),
    ],
)
def test_argument_errors(arguments: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        make_update_scenario(four_classes(), **arguments)


def test_split_errors() -> None:
    splits = four_classes()
    with pytest.raises(InputError, match=r"missing \['test'\]"):
        make_update_scenario({"train": splits["train"]})
    other = load_arrays(test=(np.zeros((2, 1)), [0, 1]), class_names=["w", "x", "y", "q"])
    with pytest.raises(MismatchError, match="class 3 is 'z' vs 'q'"):
        make_update_scenario({"train": splits["train"], "test": other["test"]})
    no_class_three = load_arrays(
        train=(np.zeros((4, 1)), [0, 1, 2, 2]),
        test=(np.zeros((1, 1)), [3]),
        class_names=["w", "x", "y", "z"],
    )
    with pytest.raises(InputError, match=r"no training sample belongs to old_classes 3"):
        make_update_scenario(no_class_three, old_classes=[3], validation_fraction=0.5)


def test_digits_scenario_real_data() -> None:
    scenario = make_update_scenario(load_digits(seed=0), old_fraction=0.2, seed=0)
    train_counts = load_digits(seed=0)["train"].class_counts().numpy()
    validation = np.floor(0.2 * train_counts + 0.5)
    old = np.floor(0.2 * (train_counts - validation) + 0.5)
    assert scenario.validation.class_counts().tolist() == validation.astype(int).tolist()
    assert scenario.old_train.class_counts().tolist() == old.astype(int).tolist()
    assert len(scenario.test) == 451


# --------------------------------------------------------------------------- UpdateScenario


def test_update_scenario_built_directly_knows_all_classes_by_default() -> None:
    splits = four_classes(dev=True)
    scenario = UpdateScenario(
        old_train=splits["train"].subset(np.arange(0, 200, 2)),
        new_train=splits["train"],
        validation=splits["dev"],
        test=splits["test"],
        seed=None,
        description="by hand",
    )
    assert scenario.old_classes == (0, 1, 2, 3)
    assert scenario.to_dict()["splits"]["old_train"]["class_counts"] == [25] * 4


def test_update_scenario_refuses_leaks_and_unknown_classes() -> None:
    good = make_update_scenario(four_classes(), old_classes=[0, 1], seed=0)
    with pytest.raises(MismatchError, match=r"new_train and test share 40 id\(s\)"):
        replace(good, test=good.new_train.subset(np.arange(40)))
    with pytest.raises(MismatchError, match=r"old_train and validation share 1 id\(s\)"):
        replace(good, old_train=good.validation.subset([0]), old_classes=None)
    with pytest.raises(MismatchError, match=r"old_train holds classes 2, 3 outside old_classes"):
        replace(good, old_train=good.new_train)
    with pytest.raises(InputError, match=r"UpdateScenario\.test is dict; expected a LabeledData"):
        replace(good, test={"a": 1})
    renamed = LabeledData(
        good.test.inputs, good.test.labels, good.test.ids, ("a", "b", "c", "d"), "t"
    )
    with pytest.raises(MismatchError, match="old_train and test have different class names"):
        replace(good, test=renamed)


def test_to_dict_is_json_and_identifies_the_samples() -> None:
    scenario = make_update_scenario(four_classes(), seed=3)
    record = json.loads(json.dumps(scenario.to_dict()))
    assert record["seed"] == 3 and record["old_classes"] == [0, 1, 2, 3]
    assert record["class_names"] == ["w", "x", "y", "z"]
    assert record["description"] == scenario.description
    old = record["splits"]["old_train"]
    assert old["size"] == 48 and old["class_counts"] == [12] * 4
    packed = b"".join(struct.pack("<q", i) for i in scenario.old_train.ids.tolist())
    assert old["ids_sha256"] == hashlib.sha256(packed).hexdigest()
    assert set(record["splits"]) == {"old_train", "new_train", "validation", "test"}


# --------------------------------------------------------------------------- MASSIVE


@pytest.mark.skipif(not MASSIVE.is_dir(), reason="../shared/data is not here")
def test_massive_update_scenario_real() -> None:
    scenario = massive_update_scenario(MASSIVE)
    sizes = {field: len(data) for field, data in scenario.splits().items()}
    assert sizes == {"old_train": 1000, "new_train": 1500, "validation": 500, "test": 4000}
    assert ids(scenario.old_train) <= ids(scenario.new_train)  # the first 1000 are the old ones
    assert scenario.num_classes == 60 and scenario.old_classes == tuple(range(60))
    assert scenario.seed is None and "updated/dev (500)" in scenario.description
    assert scenario.new_train.name == "updated/train"


def write_version(folder: Path, labels: list[str], split_ids: dict[str, int]) -> None:
    """One MASSIVE version folder with one line per split."""
    folder.mkdir(parents=True)
    (folder / "info.json").write_text(json.dumps({"labels": labels}))
    for split, sample_id in split_ids.items():
        line = {"id": str(sample_id), "text": "t", "label": 0}
        (folder / f"{split}.jsonl").write_text(json.dumps(line) + "\n")


def test_massive_update_scenario_checks_the_label_lists(tmp_path: Path) -> None:
    write_version(tmp_path / "old", ["a", "b"], {"train": 1, "dev": 2, "test": 5})
    write_version(tmp_path / "updated", ["b", "a"], {"train": 11, "dev": 12, "test": 5})
    with pytest.raises(MismatchError, match=r"old/info\.json and updated/info\.json .*'a' vs 'b'"):
        massive_update_scenario(tmp_path)


def test_massive_update_scenario_needs_updated_dev(tmp_path: Path) -> None:
    write_version(tmp_path / "old", ["a", "b"], {"train": 1, "dev": 2, "test": 5})
    write_version(tmp_path / "updated", ["a", "b"], {"train": 11, "test": 5})
    with pytest.raises(InputError, match=r"has no dev\.jsonl"):
        massive_update_scenario(tmp_path)
    with pytest.raises(FileFormatError, match="is not a folder"):
        massive_update_scenario(tmp_path / "absent")
