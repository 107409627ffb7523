"""Running one point of a sweep, in whichever process: train or interpolate, measure, record.

A loss point trains a new model with the point's objective against the sweep's old model,
exactly as :mod:`flipless.train.recipe` does (same scenario, teacher, optimizer and kept-epoch
rule; from scratch, or from the old model's weights with ``model.init = "old"``), except that
the new model's initialisation and batch order are seeded with the point's seed (the recipe
seeds them with ``config.seed``, which here fixes the data split for every point).
An interpolation point loads its seed's cross-entropy model and the old one and builds
θ(α) = α θ_old + (1 − α) θ_ce (Fisher-weighted for ``fisher-bcwi``, with the old model's
diagonal Fisher on its own training split; Schumann et al., 2023).

Either way the model is measured against the old model on the new training split
(``train``), the validation split (``dev``) and the test split (``test``) with
:func:`flipless.compare`. The point's folder is emptied first (a folder without a record is
redone from scratch); the files are written there, and the record that points to them is
returned to the parent, which appends it to the store last.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flipless._version import __version__
from flipless.data.labeled import LabeledData
from flipless.data.scenario import UpdateScenario
from flipless.errors import InputError
from flipless.inference.predict import predicted_classes
from flipless.metrics.comparison import Comparison, compare
from flipless.models.files import load_model, save_model
from flipless.models.sources import OldModel, build_new_model, load_old_model, start_from_old
from flipless.sweep.grid import SweepPoint
from flipless.sweep.store import RECORD_SCHEMA, to_json_value
from flipless.sweep.workspace import log_event, utc_now
from flipless.teachers import known_classes
from flipless.train.config import RunConfig
from flipless.train.loop import fit
from flipless.train.recipe import (
    build_objective,
    build_teacher,
    load_scenario,
    old_in_label_space,
    optimizer_factory,
)

#: The metrics of each split in a record, in this order.
SPLIT_METRICS = (
    "accuracy",
    "old_accuracy",
    "negative_flip_rate",
    "positive_flip_rate",
    "relative_negative_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs to run one point (picklable).

    Attributes:
        point: the grid point.
        config: its run config (:func:`~flipless.sweep.grid.point_config`).
        sweep_folder: the store's folder; record paths are relative to it.
        fingerprint: the point's settings fingerprint, copied into the record.
        new_model: for an interpolation point, the cross-entropy model's file.
        fisher: for ``fisher-bcwi``, the old model's Fisher file.
    """

    point: SweepPoint
    config: RunConfig
    sweep_folder: str
    fingerprint: str
    new_model: str | None = None
    fisher: str | None = None


def split_metrics(comparison: Comparison) -> dict[str, Any]:
    """The record's metrics of one split (NaN where a rate is undefined)."""
    values = {
        "accuracy": comparison.accuracy_new,
        "old_accuracy": comparison.accuracy_old,
        "negative_flip_rate": comparison.negative_flip_rate,
        "positive_flip_rate": comparison.positive_flip_rate,
        "relative_negative_flip_rate": comparison.relative_negative_flip_rate,
        "backward_trust_compatibility": comparison.backward_trust_compatibility,
        "backward_error_compatibility": comparison.backward_error_compatibility,
    }
    return {**{name: float(value) for name, value in values.items()}, "size": comparison.total}


def measure(
    old: nn.Module,
    new: nn.Module,
    scenario: UpdateScenario,
    seed: int,
    batch_size: int,
    old_classes: tuple[int, ...] | None = None,
) -> dict[str, Comparison]:
    """The new model against the old one on the train (new), dev and test splits, with the
    data's own ids (strings where the source wrote strings); ``old`` predicts in the data's
    label space, and ``old_classes`` (None: all) are the classes it knows."""
    splits: dict[str, LabeledData] = {
        "train": scenario.new_train,
        "dev": scenario.validation,
        "test": scenario.test,
    }
    return {
        name: compare(
            predicted_classes(old, data, batch_size),
            predicted_classes(new, data, batch_size),
            data.labels.numpy(),
            ids=scenario.original_ids(data.ids),
            class_names=list(scenario.class_names),
            seed=seed,
            old_classes=old_classes,
        )
        for name, data in splits.items()
    }


def _train(task: PointTask, scenario: UpdateScenario, old_source: OldModel, out: Path) -> nn.Module:
    config = task.config
    old, old_names = old_source.model, old_source.class_names
    objective = build_objective(config, old)
    teacher = None
    if objective is not None:
        teacher = build_teacher(config, old, scenario, out, old_names)
    old_view = old_in_label_space(old, scenario, old_names)
    torch.manual_seed(task.point.seed)
    new = build_new_model(config.model, scenario.new_train, old, old_names)
    result = fit(
        new,
        scenario.new_train,
        scenario.validation,
        objective=objective,
        teacher=teacher,
        old_model=old_view.as_model(),
        old_classes=known_classes(old_view),
        optimizer=optimizer_factory(config),
        settings=config.train,
    )
    history = result.history_document()
    (out / "history.json").write_text(json.dumps(to_json_value(history), indent=1) + "\n")
    return result.model


def _interpolate(task: PointTask, scenario: UpdateScenario, old_source: OldModel) -> nn.Module:
    """θ(α) of the old model and the seed's cross-entropy model. When the old head's rows are
    other classes than the data's (fewer, or in another order), the old side is the old model
    with its rows moved to the data's classes by name (:func:`start_from_old`), and the rows
    of classes it never had are the new model's (``MergePolicy.new_class_rows``)."""
    from flipless.merge.fisher import load_fisher
    from flipless.merge.interpolate import interpolate
    from flipless.merge.policy import MergePolicy, new_class_rows_from_names

    new = load_model(task.new_model)
    fisher = load_fisher(task.fisher) if task.fisher is not None else None
    old, old_names = old_source.model, old_source.class_names
    names = tuple(scenario.class_names)
    old_weight = float(task.point.strength)
    if old_names is None or tuple(old_names) == names:
        return interpolate(old, new, old_weight, fisher=fisher)
    if fisher is not None:
        raise InputError(
            f"{task.point.method}: the old model's head predicts {list(old_names)[:10]}, not the "
            "data's classes, and its Fisher information covers only that head; use bcwi, or "
            "an old model built with the data's classes."
        )
    aligned = start_from_old(old, names, old_names)
    heads = [name for name in ("head.weight", "head.bias") if name in aligned.state_dict()]
    rows = new_class_rows_from_names(old_names, names, heads)
    return interpolate(aligned, new, policy=MergePolicy(old_weight, new_class_rows=rows))


def _relative(path: Path, folder: Path) -> str:
    return path.resolve().relative_to(folder.resolve()).as_posix()


def run_point(task: PointTask) -> dict[str, Any]:
    """Run one point and return its record (see the module docstring and docs/sweep.md)."""
    started = time.perf_counter()
    point, config = task.point, task.config
    folder = Path(task.sweep_folder)
    out = Path(config.output_dir)
    log_event(folder, "started", point.point_id)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = config.to_dict()
    if point.kind == "interpolation":
        settings["interpolation"] = {
            "method": point.method,
            "old_weight": point.strength,
            "new_model": _relative(Path(task.new_model), folder),
            "fisher": None if task.fisher is None else _relative(Path(task.fisher), folder),
        }
    (out / "config.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
    scenario = load_scenario(config)
    old_source = load_old_model(config.old)
    old = old_source.model
    trained = point.kind == "loss"
    if trained:
        model = _train(task, scenario, old_source, out)
    else:
        model = _interpolate(task, scenario, old_source)
    save_model(model, out / "model.safetensors", {"role": "new", "point_id": point.point_id})
    old_view = old_in_label_space(old, scenario, old_source.class_names)
    comparisons = measure(
        old_view.as_model(),
        model,
        scenario,
        point.seed,
        config.train.eval_batch_size,
        known_classes(old_view),
    )
    comparisons["test"].to_json(str(out / "test_comparison.json"))
    return {
        "schema": RECORD_SCHEMA,
        "point_id": point.point_id,
        "method": point.method,
        "kind": point.kind,
        "strength_name": point.strength_name,
        "strength": point.strength,
        "seed": point.seed,
        "config": to_json_value(json.loads(json.dumps(settings, default=str))),
        "metrics": {name: split_metrics(c) for name, c in comparisons.items()},
        "comparison_path": _relative(out / "test_comparison.json", folder),
        "model_path": _relative(out / "model.safetensors", folder),
        "duration_s": round(time.perf_counter() - started, 3),
        "finished_at": utc_now(),
        "versions": {
            "flipless": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "fingerprint": task.fingerprint,
    }


def run_point_logged(task: PointTask) -> dict[str, Any]:
    """:func:`run_point`, writing the traceback to the point's ``error.txt`` when it fails."""
    try:
        return run_point(task)
    except BaseException:
        folder = Path(task.config.output_dir)
        if folder.is_dir():
            (folder / "error.txt").write_text(traceback.format_exc())
        raise
