"""Check a whole run config before anything runs: one clear error naming the key, no training.

:func:`check_run_config` is what :func:`~flipless.train.recipe.run_config` (``flipless
train``) and the sweep's check (``flipless sweep``) call first, so that a typo in the last
section of a config is not found after the old model has trained for an hour. It checks:

* ``output_dir``: not an existing file (nor an object, for a URL);
* ``optimizer``: ``lr`` > 0, ``momentum`` in [0, 1), ``weight_decay`` ≥ 0;
* ``train.schedule``: its settings, and that a warm-up in epochs (or a one-cycle rise per
  epoch) fits in ``train.epochs`` (:mod:`flipless.train.schedules`);
* ``loss``: the preset's settings, by building the objective (a ``bct`` old head is taken
  from the old model later, so only its presence is assumed here);
* ``model``: a registry name and settings its constructor accepts, or an importable target;
* ``old``: the checkpoint exists, or the target is importable;
* ``data``: readable, columns present, labels valid
  (:func:`flipless.data.sources.check_data`; nothing decoded, nothing trained).

Every error is an :class:`~flipless.errors.InputError` (a missing file: a
:class:`~flipless.errors.MissingFileError`) whose message starts with the key.
"""

from __future__ import annotations

import inspect
import math
import numbers
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.errors import InputError, MissingFileError
from flipless.train.config import LossConfig, OptimizerConfig, RunConfig
from flipless.train.schedules import check_schedule
from flipless.train.settings import TrainSettings

#: Settings of a registry model that the data fills in when the config leaves them out.
DATA_FILLED = ("num_classes", "in_features", "in_channels", "image_size", "path")


def check_run_config(config: RunConfig) -> None:
    """Raise on the first problem of ``config`` (see the module docstring); run nothing."""
    check_output_dir(config.output_dir, "output_dir")
    check_optimizer(config.optimizer)
    check_train_schedule(config.train)
    if config.old.train_epochs is not None:  # the old model trains with the same schedule
        check_train_schedule(config.train, config.old.train_epochs, "old.train_epochs")
    check_loss(config.loss)
    check_model(config.model)
    check_old(config.old)
    from flipless.data.sources import check_data

    check_data(config.data)


def check_output_dir(folder: str, key: str) -> None:
    """``folder`` may exist as a folder (a resumed run) or not yet; a file there is an error.

    A URL (the run is staged locally and uploaded, :mod:`flipless.train.staging`) must not
    name an object either.
    """
    if remote.is_remote(folder):
        if remote.is_file(folder):
            raise InputError(
                f"{key}: {folder} is a file; expected a folder URL for the run's files (a new "
                f"one, or the folder of the run to resume). Choose another {key}."
            )
        return
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{key}: {path} is a file; expected a folder for the run's files (a new one, or "
            "the folder of the run to resume). Choose another output_dir."
        )
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{key}: {parent} is a file, so {path} cannot be made a folder.")


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_optimizer(optimizer: OptimizerConfig) -> None:
    """``lr`` > 0, ``momentum`` in [0, 1), ``weight_decay`` ≥ 0."""
    if not _number(optimizer.lr) or optimizer.lr <= 0:
        raise InputError(
            f"optimizer.lr: {optimizer.lr!r}; expected a learning rate > 0, e.g. 1e-3."
        )
    if not _number(optimizer.momentum) or not 0 <= optimizer.momentum < 1:
        raise InputError(f"optimizer.momentum: {optimizer.momentum!r}; expected a value in [0, 1).")
    if not _number(optimizer.weight_decay) or optimizer.weight_decay < 0:
        raise InputError(
            f"optimizer.weight_decay: {optimizer.weight_decay!r}; expected a value ≥ 0."
        )


def check_train_schedule(
    train: TrainSettings, epochs: int | None = None, epochs_key: str = "train.epochs"
) -> None:
    """The schedule's settings, and what can be known before the data is read: a warm-up of
    ``warmup_epochs`` shorter than the run of ``epochs`` (default ``train.epochs``), a one-cycle
    rise of more than one epoch tick."""
    epochs = train.epochs if epochs is None else epochs
    try:
        values = check_schedule(train.schedule, train.schedule_settings)
    except InputError as error:
        raise InputError(f"train: {error}") from None
    if train.schedule == "warmup-cosine" and values.get("warmup_epochs", 0) >= epochs:
        raise InputError(
            f"train.schedule_settings.warmup_epochs: {values['warmup_epochs']}; expected fewer "
            f"than {epochs_key} = {epochs}."
        )
    if (
        train.schedule == "one-cycle"
        and values["interval"] == "epoch"
        and values["pct_start"] * epochs <= 1
    ):
        raise InputError(
            f"train.schedule_settings.pct_start: {values['pct_start']} of {epochs_key} = "
            f'{epochs} epochs leaves no rise; raise pct_start or use interval = "step".'
        )


def check_loss(loss: LossConfig) -> None:
    """The objective the ``[loss]`` section describes can be built (keys and values)."""
    if loss.preset == "cross-entropy":
        if loss.overrides:
            raise InputError(
                f"loss: plain cross-entropy takes no settings; got {sorted(loss.overrides)}."
            )
        return
    from flipless.losses import build_loss

    overrides = dict(loss.overrides)
    if loss.preset == "bct":
        overrides.setdefault("old_head", "the old model's head")  # taken from the old model
    try:
        build_loss(loss.preset, ce_weight=loss.ce_weight, **overrides)
    except InputError as error:
        raise InputError(f"loss: {error}") from None


def check_model(model: Any) -> None:
    """A ``[model]`` names a registered model and settings it accepts, or an importable target."""
    from flipless.targets import resolve_target

    if model.target is not None:
        if not callable(resolve_target(model.target, key="model.target")):
            raise InputError(f"model.target {model.target!r} is not callable; expected a function.")
        return
    if model.init == "old":
        return  # the old model's own architecture
    from flipless.models.registry import model_factory

    try:
        factory = model_factory(model.name)
    except InputError as error:
        raise InputError(f"model.name: {error}") from None
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(model.settings) - set(parameters))
    if unknown:
        accepted = [name for name in parameters if name not in DATA_FILLED]
        raise InputError(
            f"model: {model.name} has no setting {', '.join(map(repr, unknown))}; expected some "
            f"of {', '.join(accepted)}."
        )
    if model.path is not None and not Path(model.path).expanduser().exists():
        raise MissingFileError(f"model.path: {model.path} does not exist; expected a model folder.")


def check_old(old: Any) -> None:
    """The old model's checkpoint exists, or its target is importable."""
    if old.checkpoint is not None and not Path(old.checkpoint).expanduser().exists():
        raise MissingFileError(
            f"old.checkpoint: {old.checkpoint} does not exist; expected a flipless model file "
            "or a Hugging Face folder."
        )
    if old.target is not None:
        from flipless.targets import resolve_target

        if not callable(resolve_target(old.target, key="old.target")):
            raise InputError(f"old.target {old.target!r} is not callable; expected a function.")
