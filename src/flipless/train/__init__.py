"""Compatible training: the training loop, its settings and records, selection rules.

The models and data it trains on live in :mod:`flipless.models` and :mod:`flipless.data`; the
names most used with the loop (``MLP``, ``LabeledData``, ``make_update_scenario``, …) are
re-exported here for convenience.
"""

from flipless.data.labeled import LabeledData, stratified_split
from flipless.data.scenario import UpdateScenario, make_update_scenario
from flipless.models import (
    MLP,
    ResNet,
    ResNet18,
    SmallCNN,
    build_model,
    load_model,
    save_model,
)
from flipless.train.hooks import Hook
from flipless.train.loop import Trainer, fit
from flipless.train.records import EpochRecord, FitResult
from flipless.train.selection import SelectionRule
from flipless.train.settings import TrainSettings

__all__ = [
    "MLP",
    "EpochRecord",
    "FitResult",
    "Hook",
    "LabeledData",
    "ResNet",
    "ResNet18",
    "SelectionRule",
    "SmallCNN",
    "TrainSettings",
    "Trainer",
    "UpdateScenario",
    "build_model",
    "fit",
    "load_model",
    "make_update_scenario",
    "save_model",
    "stratified_split",
]
