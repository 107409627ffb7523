"""Run a whole compatible update from a :class:`~flipless.train.config.RunConfig`.

data → update scenario → old model (loaded, or trained on the old split) → teacher (the old
model, or its logits cached once) → objective → :func:`~flipless.train.loop.fit` on the new
split with selection on validation → the kept model measured against the old one on test.

Files written to ``output_dir``: ``config.json`` (the checked config), ``old.safetensors``
(when the old model is trained here), ``teacher.safetensors`` (cached logits), ``new/`` (the
loop's checkpoints), ``model.safetensors`` (the kept new model), ``test_comparison.json`` (the
summary) with ``test_comparison.instances.parquet`` (every test sample's outcome), and
``summary.json`` (history, test metrics, seeds and data sizes).

``output_dir`` may be a URL (``s3://bucket/runs/x``): the run then works in a local staging
folder (:mod:`flipless.train.staging`) that starts as a copy of what the URL holds (a rerun
resumes from the loop's checkpoints there, as a local run does) and is uploaded file by file
when the run ends, ``summary.json`` last, so a reader who sees ``summary.json`` sees the whole
run. A run that fails with an exception (or Ctrl-C) uploads its checkpoints too; one killed
outright (SIGKILL, a lost machine) loses what it did since it started.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flipless import remote
from flipless.data import sources as data_sources
from flipless.data.labeled import LabeledData
from flipless.data.scenario import UpdateScenario
from flipless.errors import InputError
from flipless.inference.predict import predicted_classes
from flipless.metrics.comparison import Comparison, compare
from flipless.models.files import save_model
from flipless.models.sources import (
    OldModel,
    build_new_model,
    load_old_model,
    old_model_seed,
    precompute_features,
)
from flipless.teachers import ModelTeacher, known_classes, teacher_in_label_space
from flipless.train.check import check_run_config
from flipless.train.config import RunConfig
from flipless.train.loop import fit
from flipless.train.records import FitResult
from flipless.train.settings import TrainSettings
from flipless.train.staging import publish, staged_folder

#: Written last: a reader who finds it finds the run's other files.
SUMMARY = "summary.json"


@dataclass
class RunOutcome:
    """What :func:`run_config` produced."""

    scenario: UpdateScenario
    old_model: nn.Module
    result: FitResult
    test_comparison: Comparison
    output_dir: Path | str


def load_scenario(config: RunConfig) -> UpdateScenario:
    """The data the config names, cut into the update scenario with the run's seed
    (:func:`flipless.data.sources.load_scenario`)."""
    return data_sources.load_scenario(config.data, config.seed)


def optimizer_factory(config: RunConfig):
    """``make(parameters) -> torch.optim.Optimizer`` as the config's optimizer section says."""
    settings = config.optimizer

    def make(parameters):
        if settings.name == "sgd":
            return torch.optim.SGD(
                parameters,
                lr=settings.lr,
                momentum=settings.momentum,
                weight_decay=settings.weight_decay,
            )
        kind = torch.optim.Adam if settings.name == "adam" else torch.optim.AdamW
        return kind(parameters, lr=settings.lr, weight_decay=settings.weight_decay)

    return make


def prepare_old_model(config: RunConfig, scenario: UpdateScenario, out: Path) -> OldModel:
    """The old model: loaded from ``old.checkpoint`` / ``old.target``, or trained on the
    scenario's old split (the ``[model]`` architecture from scratch, seeded with
    :func:`~flipless.models.sources.old_model_seed`, and saved with its class names as
    ``out/old.safetensors``); in eval mode."""
    if config.old.train_epochs is None:
        return load_old_model(config.old)
    seed = old_model_seed(config.seed)
    torch.manual_seed(seed)
    model = build_new_model(dataclasses.replace(config.model, init="scratch"), scenario.old_train)
    precompute_features([model], scenario.splits().values())
    settings = TrainSettings(
        **{
            **config.train.__dict__,
            "epochs": config.old.train_epochs,
            "select": "accuracy",
            "checkpoint_every": 0,
            "seed": seed,
        }
    )
    old = fit(
        model,
        scenario.old_train,
        scenario.validation,
        optimizer=optimizer_factory(config),
        settings=settings,
        output_dir=out / "old",
    ).model
    class_names = list(scenario.class_names)
    metadata = {"role": "old", "train_size": len(scenario.old_train), "class_names": class_names}
    save_model(old, out / "old.safetensors", metadata)
    return OldModel(old.eval(), tuple(class_names))


def old_in_label_space(
    old: nn.Module, scenario: UpdateScenario, old_class_names: tuple[str, ...] | None = None
) -> ModelTeacher:
    """The old model placed in the scenario's label space, matched by class name: its head's
    rows are ``old_class_names`` (None: the scenario's classes, or the ``old_classes`` for a
    head that narrow), and it knows only the scenario's ``old_classes``
    (:func:`~flipless.teachers.teacher_in_label_space`). ``.as_model()`` predicts with it;
    :func:`~flipless.teachers.known_classes` says which classes the flips are counted on."""
    known = scenario.old_classes
    with torch.no_grad():
        output = old(_fetch_inputs(scenario.validation, torch.arange(1)))
    width = int((output[0] if isinstance(output, (tuple, list)) else output).shape[1])
    return teacher_in_label_space(
        old,
        scenario.class_names,
        width,
        old_class_names,
        None if known is None or len(known) == scenario.num_classes else known,
    )


def build_teacher(
    config: RunConfig,
    old: nn.Module,
    scenario: UpdateScenario,
    out: Path,
    old_class_names: tuple[str, ...] | None = None,
) -> Any:
    """The teacher of the config's ``loss.teacher``: the live old model, or its logits cached
    once over the new training split in ``out/teacher.safetensors``; in the scenario's label
    space either way (:func:`old_in_label_space`: classes the old model never had are masked)."""
    from flipless.teachers import CachedTeacher

    teacher = old_in_label_space(old, scenario, old_class_names)
    if config.loss.teacher == "model":
        return teacher
    data = scenario.new_train
    batches = [
        (_fetch_inputs(data, chunk), data.ids[chunk])
        for chunk in torch.arange(len(data)).split(config.train.eval_batch_size)
    ]
    return CachedTeacher.build(teacher, batches, out / "teacher.safetensors")


def _fetch_inputs(data: LabeledData, positions: torch.Tensor) -> Any:
    if isinstance(data.inputs, torch.Tensor):
        return data.inputs[positions]
    return [data.inputs[i] for i in positions.tolist()]


def build_objective(config: RunConfig, old: nn.Module):
    """The config's compatibility objective (None for plain cross-entropy)."""
    if config.loss.preset == "cross-entropy":
        if config.loss.overrides:
            raise InputError(
                f"loss: plain cross-entropy takes no settings; got {sorted(config.loss.overrides)}."
            )
        return None
    from flipless.losses import build_loss
    from flipless.losses.features import OldHead

    overrides = dict(config.loss.overrides)
    if config.loss.preset == "bct":
        overrides.setdefault("old_head", OldHead.from_model(old))
    return build_loss(config.loss.preset, ce_weight=config.loss.ce_weight, **overrides)


def run_config(config: RunConfig) -> RunOutcome:
    """Train and measure the update the config describes; see the module docstring.

    The whole config is checked first (:func:`~flipless.train.check.check_run_config`): a
    bad key anywhere fails before any file is written or any model trained.
    """
    check_run_config(config)
    if not remote.is_remote(config.output_dir):
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        return _run_in(config, out)
    url = config.output_dir
    with staged_folder(url) as staging:
        try:
            outcome = _run_in(config, staging)
        except BaseException:
            publish(staging, url, last=(SUMMARY,))  # the checkpoints, for a resume
            raise
        publish(staging, url, last=(SUMMARY,))
    return dataclasses.replace(outcome, output_dir=url)


def _run_in(config: RunConfig, out: Path) -> RunOutcome:
    """:func:`run_config` with the run's files written to the local folder ``out``."""
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))
    scenario = load_scenario(config)
    old_source = prepare_old_model(config, scenario, out)
    old = old_source.model
    objective = build_objective(config, old)
    old_view = old_in_label_space(old, scenario, old_source.class_names)
    old_classes = known_classes(old_view)  # None when the old model knows every class
    teacher = None
    if objective is not None:
        teacher = build_teacher(config, old, scenario, out, old_source.class_names)
    tracker = None
    if config.tracking.mlflow is not None:
        from flipless.tracking import MlflowTracker

        tracker = MlflowTracker(
            config.tracking.mlflow, config.tracking.experiment, config.tracking.run_name
        )
    torch.manual_seed(config.seed)
    new = build_new_model(config.model, scenario.new_train, old, old_source.class_names)
    precompute_features([old, new], scenario.splits().values())
    try:
        result = fit(
            new,
            scenario.new_train,
            scenario.validation,
            objective=objective,
            teacher=teacher,
            old_model=old_view.as_model(),
            old_classes=old_classes,
            id_names=scenario.id_names,
            optimizer=optimizer_factory(config),
            settings=config.train,
            tracker=tracker,
            output_dir=out / "new",
        )
        test = compare(
            predicted_classes(old_view.as_model(), scenario.test),
            predicted_classes(result.model, scenario.test),
            scenario.test.labels.numpy(),
            ids=scenario.original_ids(scenario.test.ids),
            class_names=list(scenario.class_names),
            seed=config.seed,
            old_classes=old_classes,
        )
        if tracker is not None:
            tracker.log_comparison(test, name="test_comparison")
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    if tracker is not None:
        tracker.close()
    save_model(
        result.model,
        out / "model.safetensors",
        {"role": "new", "rule": result.rule, "class_names": list(scenario.class_names)},
    )
    test.to_json(str(out / "test_comparison.json"))
    summary = {
        "scenario": scenario.to_dict(),
        **result.history_document(),
        "test": {
            name: _number(getattr(test, name))
            for name in (
                "accuracy_old",
                "accuracy_new",
                "negative_flip_rate",
                "positive_flip_rate",
                "backward_trust_compatibility",
                "backward_error_compatibility",
            )
        },
    }
    if test.restriction is not None:  # the rates above count the old classes only
        summary["test"]["accuracy_new_all_classes"] = _number(test.restriction.accuracy_new_all)
        summary["test"]["restriction"] = test.restriction.to_dict()
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
    return RunOutcome(scenario, old, result, test, out)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
