"""Learning-rate schedules of the loop: built on ``torch.optim.lr_scheduler``, stepped per
optimizer step or per epoch, resumable (their state is in the loop's checkpoint).

A schedule counts *ticks*: optimizer steps (``interval = "step"``, the default; with gradient
accumulation one tick per optimizer step, not per micro-batch) or epochs (``interval =
"epoch"``). A run of ``T`` ticks trains tick ``t`` (0-based) at ``lr · factor(t)``, ``lr``
being the optimizer's learning rate:

* ``"constant"``: ``factor(t) = 1``.
* ``"warmup-cosine"``: a linear warm-up over ``W`` ticks (``warmup_steps``, or
  ``warmup_epochs`` × ticks per epoch; default 0), then a cosine decay to ``min_lr_ratio``
  (``r``, default 0) (Loshchilov & Hutter, "SGDR", 2017; warm-up: Goyal et al., "Accurate,
  Large Minibatch SGD", 2017)::

      factor(t) = (t + 1) / (W + 1)                         for t < W
      factor(t) = r + (1 − r) · ½ · (1 + cos(π · p)),  p = (t − W) / (T − W)   for t ≥ W

* ``"step"``: ``factor(t) = gamma ** ⌊t / S⌋`` with ``S = step_epochs`` × ticks per epoch
  (``gamma`` default 0.1, ``step_epochs`` required).
* ``"one-cycle"``: torch's ``OneCycleLR`` (Smith & Topin, "Super-Convergence", 2018): from
  ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of the ticks, then down
  to ``max_lr / div_factor / final_div_factor`` (``anneal_strategy`` "cos" or "linear");
  ``max_lr`` defaults to the optimizer's lr; momentum is not cycled.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from flipless.errors import InputError

INTERVALS = ("step", "epoch")
#: the settings each schedule takes, besides ``interval``
SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "warmup-cosine": ("warmup_epochs", "warmup_steps", "min_lr_ratio"),
    "step": ("step_epochs", "gamma"),
    "one-cycle": ("max_lr", "pct_start", "div_factor", "final_div_factor", "anneal_strategy"),
}
SCHEDULES = tuple(SCHEDULE_KEYS)
ANNEAL_STRATEGIES = ("cos", "linear")


@dataclass
class Schedule:
    """A torch scheduler and when the loop steps it: after every optimizer ``"step"`` or at the
    end of every ``"epoch"``."""

    scheduler: Any
    interval: str = "step"

    def step(self) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise InputError(f"schedule_settings.{key}: {value!r}; expected {expected}.")


def check_schedule(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of schedule ``name``, each checked, with their defaults filled in.

    Raises InputError naming the schedule or the key (``schedule_settings.KEY``).
    """
    if name not in SCHEDULE_KEYS:
        raise InputError(f"schedule: {name!r}; expected one of {SCHEDULES}.")
    if not isinstance(settings, Mapping):
        raise InputError(f"schedule_settings: expected a table of settings; got {settings!r}.")
    accepted = ("interval", *SCHEDULE_KEYS[name])
    for key in settings:
        if key not in accepted:
            raise InputError(
                f"schedule_settings.{key}: unknown key for schedule {name!r}; expected some of "
                f"{', '.join(accepted)}."
            )
    values = dict(settings)
    interval = values.setdefault("interval", "step")
    _require(interval in INTERVALS, "interval", interval, f"one of {INTERVALS}")
    if name == "warmup-cosine":
        if "warmup_epochs" in values and "warmup_steps" in values:
            raise InputError(
                "schedule_settings: warmup_epochs and warmup_steps both given; give one of them."
            )
        if "warmup_steps" in values:
            steps = values["warmup_steps"]
            _require(
                isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
                "warmup_steps",
                steps,
                "an integer ≥ 0",
            )
            _require(
                interval == "step",
                "warmup_steps",
                steps,
                'interval = "step" (or use warmup_epochs)',
            )
        epochs = values.setdefault("warmup_epochs", 0) if "warmup_steps" not in values else 0
        _require(_real(epochs) and epochs >= 0, "warmup_epochs", epochs, "a number ≥ 0")
        ratio = values.setdefault("min_lr_ratio", 0.0)
        _require(_real(ratio) and 0 <= ratio <= 1, "min_lr_ratio", ratio, "a number in [0, 1]")
    elif name == "step":
        if "step_epochs" not in values:
            raise InputError(
                "schedule_settings.step_epochs: missing; the step schedule needs the number of "
                "epochs between two decays, e.g. step_epochs = 30."
            )
        every = values["step_epochs"]
        _require(
            isinstance(every, int) and not isinstance(every, bool) and every >= 1,
            "step_epochs",
            every,
            "a positive integer",
        )
        gamma = values.setdefault("gamma", 0.1)
        _require(_real(gamma) and 0 < gamma <= 1, "gamma", gamma, "a number in (0, 1]")
    elif name == "one-cycle":
        if "max_lr" in values:
            _require(
                _real(values["max_lr"]) and values["max_lr"] > 0,
                "max_lr",
                values["max_lr"],
                "a number > 0",
            )
        pct = values.setdefault("pct_start", 0.3)
        _require(_real(pct) and 0 < pct < 1, "pct_start", pct, "a number in (0, 1)")
        for key, default in (("div_factor", 25.0), ("final_div_factor", 1e4)):
            value = values.setdefault(key, default)
            _require(_real(value) and value > 0, key, value, "a number > 0")
        anneal = values.setdefault("anneal_strategy", "cos")
        _require(
            anneal in ANNEAL_STRATEGIES, "anneal_strategy", anneal, f"one of {ANNEAL_STRATEGIES}"
        )
    return values


def _warmup_cosine(warmup: int, total: int, min_lr_ratio: float):
    def factor(tick: int) -> float:
        if tick < warmup:
            return (tick + 1) / (warmup + 1)
        progress = min(1.0, (tick - warmup) / (total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    **settings: Any,
) -> Schedule:
    """Schedule ``name`` (see the module docstring) for a run of ``total_steps`` optimizer
    steps, ``steps_per_epoch`` of them an epoch; ``settings`` as :func:`check_schedule` takes."""
    values = check_schedule(name, settings)
    if steps_per_epoch < 1 or total_steps < steps_per_epoch or total_steps % steps_per_epoch:
        raise InputError(
            f"total_steps={total_steps} must be a positive multiple of "
            f"steps_per_epoch={steps_per_epoch}."
        )
    interval = values["interval"]
    per_epoch = steps_per_epoch if interval == "step" else 1
    total = total_steps if interval == "step" else total_steps // steps_per_epoch
    scheduler: LRScheduler
    if name == "constant":
        scheduler = LambdaLR(optimizer, lambda tick: 1.0)
    elif name == "warmup-cosine":
        warmup = values.get("warmup_steps")
        if warmup is None:
            warmup = round(values["warmup_epochs"] * per_epoch)
        if warmup >= total:
            raise InputError(
                f"schedule_settings: a warm-up of {warmup} {interval}s leaves nothing of the "
                f"run's {total}; shorten warmup_epochs / warmup_steps."
            )
        scheduler = LambdaLR(optimizer, _warmup_cosine(warmup, total, values["min_lr_ratio"]))
    elif name == "step":
        every, gamma = values["step_epochs"] * per_epoch, values["gamma"]
        scheduler = LambdaLR(optimizer, lambda tick: gamma ** (tick // every))
    else:
        if values["pct_start"] * total <= 1:
            raise InputError(
                f"schedule_settings.pct_start: {values['pct_start']} of {total} {interval}s "
                'leaves no rise; raise pct_start, or use more epochs or interval = "step".'
            )
        max_lr = values.get("max_lr")
        scheduler = OneCycleLR(
            optimizer,
            max_lr=max_lr if max_lr is not None else [g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=values["pct_start"],
            anneal_strategy=values["anneal_strategy"],
            div_factor=values["div_factor"],
            final_div_factor=values["final_div_factor"],
            cycle_momentum=False,
        )
    return Schedule(scheduler, interval)
