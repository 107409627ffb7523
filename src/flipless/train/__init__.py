"""Compatible training: models and data that ship, update scenarios and the training loop.

The loop (:func:`fit`, :class:`Trainer`) imports torch-only modules; the Hugging Face text
model lives in :mod:`flipless.train.text` and is imported only when asked for.
"""

from flipless.train.data import LabeledData, stratified_split
from flipless.train.hooks import Hook
from flipless.train.loop import Trainer, fit
from flipless.train.models import (
    MLP,
    ResNet,
    ResNet18,
    SmallCNN,
    build_model,
    load_model,
    save_model,
)
from flipless.train.records import EpochRecord, FitResult
from flipless.train.scenario import UpdateScenario, make_update_scenario
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
