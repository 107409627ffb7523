"""The embedded demo: a real model update on data that ships with scikit-learn, made compatible.

Scikit-learn's 8×8 handwritten digits, cut into an update scenario: the old model (an MLP) is
trained on a stratified 30 % of the training split, the new models on all of it; validation
is a held-out part of the training split and picks each run's kept epoch; every model is
measured against the old one on the same test split. Methods:

* ``cross-entropy``: the plain update: more accurate on average, yet it breaks digits the old
  model got right (the negative flips);
* ``fd-kl``: focal distillation (Yan et al., CVPR 2021): KL to the old model, T = 100,
  weighted 1 + 5·[old correct];
* ``ldi``: logit difference inhibition (Zhao et al., 2022): p = 2, margin 0.5, mix 0.5;
* ``fine-tuned``: the old model fine-tuned on all the data (cross-entropy), and
* ``bcwi``: that model interpolated back towards the old one, θ = α θ_old + (1 − α) θ_ft
  (Schumann et al., 2023), α chosen on validation as the largest old-weight whose accuracy
  stays within half a point of the fine-tuned model's.

Everything is seeded; the same seed gives the same numbers on the same machine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flipless.data.loaders import load_digits
from flipless.data.scenario import UpdateScenario, make_update_scenario
from flipless.losses import build_loss
from flipless.merge.interpolate import interpolate
from flipless.merge.selection import interpolation_candidates, select_old_weight
from flipless.metrics.comparison import Comparison, compare
from flipless.models.vision import MLP
from flipless.teachers import ModelTeacher
from flipless.train.hooks import Hook
from flipless.train.loop import fit
from flipless.train.progress import epoch_line
from flipless.train.settings import TrainSettings

OLD_TRAIN_SHARE = 0.3
METHODS = ("cross-entropy", "fd-kl", "ldi")
BCWI_RULE = "max-old-weight-within:0.005"
SETTINGS = {"epochs": 30, "batch_size": 64, "clip_grad_norm": 2.0, "select": "accuracy"}


@dataclass
class DemoUpdate:
    """The scenario and, per method, the new model's comparison with the old one on test
    and its kept epoch (numbered from 1)."""

    scenario: UpdateScenario
    comparisons: dict[str, Comparison]
    kept_epochs: dict[str, int]
    seed: int
    old_weight: float | None = None
    settings: dict[str, object] = field(default_factory=lambda: dict(SETTINGS))

    def summary(self) -> dict[str, object]:
        """The table and how it was made, as plain JSON values."""
        rows = {
            name: {
                "accuracy_old": c.accuracy_old,
                "accuracy_new": c.accuracy_new,
                "negative_flips": c.negative_flips,
                "negative_flip_rate": c.negative_flip_rate,
                "positive_flip_rate": c.positive_flip_rate,
                "backward_trust_compatibility": c.backward_trust_compatibility,
                "backward_error_compatibility": c.backward_error_compatibility,
                "kept_epoch": self.kept_epochs[name],
            }
            for name, c in self.comparisons.items()
        }
        return {
            "seed": self.seed,
            "scenario": self.scenario.to_dict(),
            "training": {
                **self.settings,
                "optimizer": "SGD lr 0.05 momentum 0.9",
                "model": "MLP 64-128-10",
            },
            "bcwi": {"old_weight": self.old_weight, "rule": BCWI_RULE},
            "methods": rows,
        }


class EpochLog(Hook):
    """One labelled line per epoch (``old model  epoch 3/30  loss …``) through ``log``."""

    def __init__(self, label: str, epochs: int, log: Callable[[str], None]) -> None:
        self.label = label
        self.epochs = epochs
        self.log = log

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        self.log(f"  {self.label}  {epoch_line(record, self.epochs)}")


def _mlp(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(64, 10, hidden=(128,))


def _sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.05, momentum=0.9)


def _predict(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(inputs).argmax(dim=1).numpy()


def run_demo(
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    log: Callable[[str], None] | None = None,
) -> DemoUpdate:
    """Train the old model and one new model per method; compare each with the old on test.

    ``log``, when given, receives a line as each phase starts and a labelled line per epoch
    of every model trained.
    """

    def say(text: str) -> None:
        if log is not None:
            log(text)

    def logged(label: str) -> list[Hook]:
        return [] if log is None else [EpochLog(label, settings.epochs, log)]

    phases = len(methods) + 3  # the old model, one per method, fine-tuning, choosing α
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest and repeatable
    try:
        scenario = make_update_scenario(load_digits(seed=seed), OLD_TRAIN_SHARE, seed=seed)
        settings = TrainSettings(**SETTINGS, seed=seed, progress="none")
        say(
            f"[1/{phases}] old model: {len(scenario.old_train)} images "
            f"({OLD_TRAIN_SHARE:.0%} of the training split), {settings.epochs} epochs"
        )
        old = fit(
            _mlp(seed + 100),
            scenario.old_train,
            scenario.validation,
            optimizer=_sgd,
            settings=settings,
            hooks=logged("old model"),
        ).model
        old_test = _predict(old, scenario.test.inputs)
        comparisons, kept = {}, {}
        for phase, name in enumerate(methods, start=2):
            say(
                f"[{phase}/{phases}] new model, {name}: {len(scenario.new_train)} images, "
                f"{settings.epochs} epochs"
            )
            options = {}
            if name != "cross-entropy":
                options = {"objective": build_loss(name), "teacher": ModelTeacher(old)}
            result = fit(
                _mlp(seed + 200),
                scenario.new_train,
                scenario.validation,
                old_model=old,
                optimizer=_sgd,
                settings=settings,
                hooks=logged(f"new {name}"),
                **options,
            )
            kept[name] = result.kept_epoch
            comparisons[name] = compare(
                old_test,
                _predict(result.model, scenario.test.inputs),
                scenario.test.labels.numpy(),
                ids=scenario.test.ids.numpy(),
                class_names=list(scenario.class_names),
                seed=seed,
            )
        say(
            f"[{phases - 1}/{phases}] the old model fine-tuned on {len(scenario.new_train)} "
            f"images, {settings.epochs} epochs"
        )
        fine_tuned = fit(
            copy.deepcopy(old).requires_grad_(True),  # the teachers froze the old model
            scenario.new_train,
            scenario.validation,
            old_model=old,
            optimizer=_sgd,
            settings=settings,
            hooks=logged("fine-tuned"),
        )
        say(
            f"[{phases}/{phases}] bcwi: choosing the old weight α on "
            f"{len(scenario.validation)} validation images ({BCWI_RULE})"
        )
        selection = select_old_weight(
            interpolation_candidates(old, [fine_tuned.model]),
            scenario.validation,
            old_model=old,
            rule=BCWI_RULE,
        )
        interpolated = interpolate(old, fine_tuned.model, selection.chosen)
        for name, model, epoch in (
            ("fine-tuned", fine_tuned.model, fine_tuned.kept_epoch),
            ("bcwi", interpolated, fine_tuned.kept_epoch),
        ):
            kept[name] = epoch
            comparisons[name] = compare(
                old_test,
                _predict(model, scenario.test.inputs),
                scenario.test.labels.numpy(),
                ids=scenario.test.ids.numpy(),
                class_names=list(scenario.class_names),
                seed=seed,
            )
    finally:
        torch.set_num_threads(threads)
    return DemoUpdate(scenario, comparisons, kept, seed, selection.chosen)


def write_demo_report(update: DemoUpdate, path: Path) -> Path:
    """The interactive report of the update: each method a run against the old model, the
    test digits drawn as thumbnails; the plain update (cross-entropy) is shown first."""
    from flipless.report import write_report

    return write_report(
        update.comparisons,
        path,
        inputs=update.scenario.test.inputs.numpy(),
        title=f"flipless demo: digits, seed {update.seed}",
    )
