"""What a run of the loop produced: one record per epoch, the result, and their metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from flipless.metrics.comparison import Comparison
from flipless.train.settings import TrainSettings


@dataclass
class EpochRecord:
    """What one epoch did: training loss (and its parts) and validation metrics."""

    epoch: int
    steps: int
    train_loss: float
    parts: dict[str, float]
    learning_rate: float
    seconds: float
    samples_per_second: float
    accuracy: float = math.nan
    negative_flip_rate: float = math.nan
    positive_flip_rate: float = math.nan
    backward_trust_compatibility: float = math.nan
    backward_error_compatibility: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """The trained model (weights of the kept epoch) and what happened."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    rule: str
    comparison: Comparison | None
    settings: TrainSettings
    output_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch]

    @property
    def kept_epoch(self) -> int:
        """The kept epoch numbered from 1, as progress lines, the CLI and files number epochs
        (``best_epoch`` is its 0-based index in ``history``)."""
        return self.best_epoch + 1

    def history_document(self) -> dict[str, Any]:
        """``kept_epoch``, ``rule`` and ``history`` as written to summary.json and a sweep
        point's history.json: every epoch numbered from 1 there."""
        return {
            "kept_epoch": self.kept_epoch,
            "rule": self.rule,
            "history": [record.as_dict() | {"epoch": record.epoch + 1} for record in self.history],
        }


def fill_validation(record: EpochRecord, result: Comparison | float | None) -> None:
    """Copy a validation result (a Comparison, or an accuracy alone) into the record."""
    if isinstance(result, Comparison):
        # the new model's accuracy on every validation example, also where the flips count
        # only the classes the old model knows (a growing label set)
        restricted = result.restriction is not None
        accuracy = result.restriction.accuracy_new_all if restricted else result.accuracy_new
        record.accuracy = float(accuracy)
        record.negative_flip_rate = float(result.negative_flip_rate)
        record.positive_flip_rate = float(result.positive_flip_rate)
        record.backward_trust_compatibility = float(result.backward_trust_compatibility)
        record.backward_error_compatibility = float(result.backward_error_compatibility)
    elif isinstance(result, float):
        record.accuracy = result


def tracker_metrics(record: EpochRecord) -> dict[str, float]:
    """The record as tracker metrics: train/… and val/… names."""
    metrics = {
        "train/loss": record.train_loss,
        "train/learning_rate": record.learning_rate,
        "train/samples_per_second": record.samples_per_second,
        "val/accuracy": record.accuracy,
        "val/negative_flip_rate": record.negative_flip_rate,
        "val/positive_flip_rate": record.positive_flip_rate,
        "val/backward_trust_compatibility": record.backward_trust_compatibility,
        "val/backward_error_compatibility": record.backward_error_compatibility,
    }
    metrics.update({f"train/{name}": value for name, value in record.parts.items()})
    return metrics
