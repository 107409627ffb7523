"""How to train: the settings of one run of the loop, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flipless.errors import InputError
from flipless.train.schedules import check_schedule
from flipless.train.selection import SelectionRule

PRECISIONS = ("32", "bf16", "fp16")
PROGRESS_MODES = ("bar", "log", "none")


@dataclass(frozen=True)
class TrainSettings:
    """How to train; every field is recorded with the run.

    Attributes:
        epochs: passes over the training data.
        batch_size: samples per optimizer step, over all processes and accumulation steps.
        accumulation_steps: micro-batches per optimizer step on each process.
        clip_grad_norm: clip the global gradient norm to this value (None: no clipping).
        precision: ``"32"``, ``"bf16"`` or ``"fp16"`` (fp16 needs CUDA).
        seed: seeds python, numpy and torch, and decides every epoch's batch order.
        select: the rule that picks the kept epoch on validation (see selection.py); without
            validation data the default "accuracy" keeps the last epoch.
        checkpoint_every: also checkpoint every this many optimizer steps (0: epoch ends only).
        eval_batch_size: batch size of validation and of the old model's predictions.
        progress: ``"bar"`` (a live bar), ``"log"`` (one plain line per epoch) or ``"none"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; default: the local GPU if any.
        schedule: the learning-rate schedule, one of :data:`~flipless.train.schedules.SCHEDULES`
            (``"constant"``, ``"warmup-cosine"``, ``"step"``, ``"one-cycle"``).
        schedule_settings: its settings (``interval``, ``warmup_epochs``, …; see
            :mod:`flipless.train.schedules`), checked here.
    """

    epochs: int = 10
    batch_size: int = 64
    accumulation_steps: int = 1
    clip_grad_norm: float | None = None
    precision: str = "32"
    seed: int = 0
    select: str = "accuracy"
    checkpoint_every: int = 0
    eval_batch_size: int = 256
    progress: str = "bar"
    device: str | None = None
    schedule: str = "constant"
    schedule_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulation_steps", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r}; expected a positive integer.")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise InputError(f"checkpoint_every={self.checkpoint_every!r}; expected an int ≥ 0.")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise InputError(f"clip_grad_norm={self.clip_grad_norm}; expected > 0 or None.")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision={self.precision!r}; expected one of {PRECISIONS}.")
        if self.progress not in PROGRESS_MODES:
            raise InputError(f"progress={self.progress!r}; expected one of {PROGRESS_MODES}.")
        SelectionRule.parse(self.select)
        check_schedule(self.schedule, self.schedule_settings)
