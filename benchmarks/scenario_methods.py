"""The update methods shared by the neural scenarios (Fashion-MNIST, MASSIVE, Banking77).

For one seed and one :class:`~flipless.train.UpdateScenario`, :func:`run_methods` trains the
old model, then every requested method, and compares each new model with the old one on the
test split. Methods (names as in the tables):

* ``plain``: the new model with cross-entropy (from fresh weights, or — ``new_from_old`` —
  the old model fine-tuned on the new training set, as in the BCWI paper);
* ``fd-kl``, ``fd-lm``, ``ldi``, ``new-error``, ``strict-imitation``: the same start and
  data with the compatibility preset of :func:`flipless.losses.build_loss`, the old model's
  logits cached once (:class:`~flipless.teachers.CachedTeacher`; no augmentation);
* ``fd-kl (λ on dev)``, ``fd-lm (λ on dev)``: the preset's term weight λ chosen on validation
  among ``WEIGHT_GRID`` and λ = 0 (the plain model): the lowest validation NFR among the λ
  whose validation accuracy is at least the plain model's − 0.003 (ties: higher accuracy);
* ``elodi``: the ``elodi`` preset with an ensemble teacher: the mean logits of
  ``ensemble_size`` plain new models (the plain model and ones of other seeds);
* ``fine-tuned``: when the new architecture differs from the old one, the old model
  fine-tuned with cross-entropy (the base of the interpolations);
* ``bcwi α=0.3``: θ = 0.3 θ_old + 0.7 θ_ft (the seed notebook's fixed weight);
* ``bcwi``: α chosen on the validation split (grid 0, 0.1, …, 1) by ``ALPHA_RULE``;
* ``bcwi-fisher``: Fisher-weighted interpolation (the old model's diagonal Fisher at its
  predicted labels on the old training set, at most ``FISHER_SAMPLES`` examples), α on dev;
* ``bcwi-soup``: interpolation towards the uniform soup of ``ensemble_size`` fine-tuned
  models (seeds differ: batch order), α on dev;
* ``output-ensemble``: p = w softmax(z_old) + (1 − w) softmax(z_new) with the plain new model,
  w on dev by the same rule.

Kept epochs: best validation accuracy for the old model, ``plain`` and ``fine-tuned``;
``COMPATIBLE_SELECT`` (the lowest validation NFR within 0.3 points of the run's best
validation accuracy) for the compatibility losses. Times: seconds of training and selection
that the method needs, its ingredients included (``bcwi`` counts the fine-tuning;
``elodi`` the ensemble members).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from common import chosen_methods
from flipless import Comparison, compare
from flipless.losses import build_loss
from flipless.merge import (
    OutputEnsemble,
    fisher_diagonal,
    interpolate,
    interpolation_candidates,
    select_old_weight,
)
from flipless.teachers import CachedTeacher
from flipless.train import LabeledData, TrainSettings, UpdateScenario, fit
from scenario_common import (
    GOAL_ACCURACY_TOLERANCE,
    Timer,
    evaluate_goal,
    finish,
    goal_lines,
    markdown_table,
    mean_std,
    record,
    summarise,
    test_metrics,
    write_html_report,
)

LOSS_METHODS = ("fd-kl", "fd-lm", "ldi", "new-error", "strict-imitation")
#: Loss weights λ tried by the ``<preset> (λ on dev)`` methods (1 is the preset itself).
WEIGHT_GRID = (0.03, 0.1, 0.3, 1.0)
MERGE_METHODS = ("bcwi α=0.3", "bcwi", "bcwi-fisher", "bcwi-soup", "output-ensemble")
ALPHA_RULE = f"min-nfr-within:{GOAL_ACCURACY_TOLERANCE}"
COMPATIBLE_SELECT = f"nfr-within:{GOAL_ACCURACY_TOLERANCE}"
FIXED_OLD_WEIGHT = 0.3
FISHER_SAMPLES = 2000


@dataclass(frozen=True)
class Recipe:
    """How one scenario trains: model factories (seed → fresh model), optimizer, epochs."""

    make_old: Callable[[int], nn.Module]
    make_new: Callable[[int], nn.Module]
    optimizer: Callable[[Any], torch.optim.Optimizer]
    old_epochs: int
    new_epochs: int
    batch_size: int
    new_from_old: bool
    ensemble_size: int
    device: str
    #: ``(optimizer, total steps) -> scheduler`` stepped after every optimizer step, or None.
    schedule: Callable[[torch.optim.Optimizer, int], Any] | None = None


def logits_of(model: nn.Module, data: LabeledData, device: str, batch: int = 512) -> torch.Tensor:
    """The model's logits [N, C] on ``data`` (eval mode, no gradients), on the CPU."""
    model = model.to(device).eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            parts.append(model(data.inputs[start : start + batch].to(device)).float().cpu())
    return torch.cat(parts)


class SeedRun:
    """Everything one seed of a scenario trains, with per-method test comparisons."""

    def __init__(self, scenario: UpdateScenario, recipe: Recipe, seed: int) -> None:
        self.scenario = scenario
        self.recipe = recipe
        self.seed = seed
        self.rows: dict[str, dict[str, Any]] = {}
        self.comparisons: dict[str, Comparison] = {}
        self.selections: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        self.old = self._fit(
            recipe.make_old(1000 + seed),
            scenario.old_train,
            None,
            "accuracy",
            epochs=recipe.old_epochs,
        )
        self.old_seconds = time.perf_counter() - started
        self.old_test = logits_of(self.old, scenario.test, recipe.device)
        self.old_teacher = self._cache(self.old)
        self._models: dict[str, tuple[nn.Module, float]] = {}
        self.old_validation = logits_of(self.old, scenario.validation, recipe.device)

    def _settings(self, select: str, epochs: int, seed: int) -> TrainSettings:
        return TrainSettings(
            epochs=epochs,
            batch_size=self.recipe.batch_size,
            seed=seed,
            select=select,
            progress="none",
            device=self.recipe.device,
        )

    def _fit(
        self,
        model: nn.Module,
        data: LabeledData,
        teacher: CachedTeacher | None,
        select: str,
        objective: Any = None,
        seed: int | None = None,
        epochs: int | None = None,
    ) -> nn.Module:
        options: dict[str, Any] = {}
        if hasattr(self, "old"):
            options["old_model"] = self.old
        if objective is not None:
            options.update(objective=objective, teacher=teacher)
        epochs = self.recipe.new_epochs if epochs is None else epochs
        if self.recipe.schedule is not None:
            steps = epochs * math.ceil(len(data) / self.recipe.batch_size)
            options["scheduler"] = lambda optimizer: self.recipe.schedule(optimizer, steps)
        return fit(
            model,
            data,
            self.scenario.validation,
            optimizer=self.recipe.optimizer,
            settings=self._settings(select, epochs, self.seed if seed is None else seed),
            resume=False,
            **options,
        ).model.eval()

    def _cache(self, teacher_model: nn.Module | Sequence[nn.Module]) -> CachedTeacher:
        """The (mean) logits of one model or an ensemble on the new training set, by id."""
        models = [teacher_model] if isinstance(teacher_model, nn.Module) else teacher_model
        data = self.scenario.new_train
        logits = torch.stack([logits_of(m, data, self.recipe.device) for m in models]).mean(0)
        return CachedTeacher(data.ids, logits)

    def _start(self, seed: int) -> nn.Module:
        """The new model's starting point: fresh weights, or a trainable copy of the old one."""
        if self.recipe.new_from_old:
            return copy.deepcopy(self.old).requires_grad_(True)
        return self.recipe.make_new(seed)

    def model(self, name: str) -> tuple[nn.Module, float]:
        """A trained ingredient by name (``plain``, ``fine-tuned``, ``member-k``), once."""
        if self.recipe.new_from_old and name.startswith("soup-"):
            name = "member-" + name.removeprefix("soup-")  # the same recipe: train it once
        if name not in self._models:
            started = time.perf_counter()
            if name == "plain":
                model = self._fit(
                    self._start(2000 + self.seed), self.scenario.new_train, None, "accuracy"
                )
            elif name == "fine-tuned":
                if self.recipe.new_from_old:
                    return self.model("plain")
                start = copy.deepcopy(self.old).requires_grad_(True)
                model = self._fit(start, self.scenario.new_train, None, "accuracy")
            else:  # member-k: plain recipe (or fine-tuning, for soups), another seed
                kind, k = name.rsplit("-", 1)
                seed = self.seed + 100 * int(k)
                base = "plain" if kind == "member" else "fine-tuned"
                if int(k) == 0:
                    return self.model(base)
                start = (
                    copy.deepcopy(self.old).requires_grad_(True)
                    if base == "fine-tuned"
                    else self._start(2000 + seed)
                )
                model = self._fit(start, self.scenario.new_train, None, "accuracy", seed=seed)
            self._models[name] = (model, time.perf_counter() - started)
        return self._models[name]

    def add(self, name: str, model: nn.Module, seconds: float, **extra: Any) -> None:
        """Compare ``model`` with the old one on test; keep its metrics and comparison."""
        test = self.scenario.test
        comparison = compare(
            self.old_test,
            logits_of(model, test, self.recipe.device),
            test.labels,
            ids=test.ids,
            class_names=list(self.scenario.class_names),
            seed=self.seed,
        )
        self.rows[name] = {**test_metrics(comparison), "seconds": seconds, **extra}
        self.comparisons[name] = comparison

    def run(self, method: str) -> None:
        """Train or build ``method`` (see the module docstring) and add its test row."""
        if method == "plain":
            model, seconds = self.model("plain")
            self.add(method, model, seconds)
        elif method == "fine-tuned":
            model, seconds = self.model("fine-tuned")
            self.add(method, model, seconds)
        elif method in LOSS_METHODS:
            model, seconds = self.loss_model(method, 1.0)
            self.add(method, model, seconds)
        elif method.endswith(" (λ on dev)"):
            self._weight_on_dev(method.removesuffix(" (λ on dev)"))
        elif method == "elodi":
            members = [self.model(f"member-{k}") for k in range(self.recipe.ensemble_size)]
            started = time.perf_counter()  # the ensemble's own training is counted below
            teacher = self._cache([m for m, _ in members])
            model = self._fit(
                self._start(2000 + self.seed),
                self.scenario.new_train,
                teacher,
                COMPATIBLE_SELECT,
                objective=build_loss("elodi"),
            )
            spent = time.perf_counter() - started + sum(s for _, s in members)
            self.add(method, model, spent, ensemble_size=len(members))
        elif method == "bcwi α=0.3":
            tuned, seconds = self.model("fine-tuned")
            merged = interpolate(self.old, tuned, FIXED_OLD_WEIGHT)
            self.add(method, merged, seconds, old_weight=FIXED_OLD_WEIGHT)
        elif method in ("bcwi", "bcwi-fisher", "bcwi-soup", "output-ensemble"):
            self._selected(method)
        else:
            raise ValueError(f"unknown method {method!r}")

    def loss_model(self, preset: str, weight: float) -> tuple[nn.Module, float]:
        """The new model trained with ``preset`` at term weight ``weight`` (1: the preset), once."""
        name = f"{preset} λ={weight:g}"
        if name not in self._models:
            started = time.perf_counter()
            objective = build_loss(preset) if weight == 1.0 else build_loss(preset, weight=weight)
            model = self._fit(
                self._start(2000 + self.seed),
                self.scenario.new_train,
                self.old_teacher,
                COMPATIBLE_SELECT,
                objective=objective,
            )
            self._models[name] = (model, time.perf_counter() - started)
        return self._models[name]

    def validation_metrics(self, model: nn.Module) -> tuple[float, float]:
        """(accuracy, NFR) of ``model`` against the old model on the validation split."""
        data = self.scenario.validation
        comparison = compare(
            self.old_validation, logits_of(model, data, self.recipe.device), data.labels
        )
        return float(comparison.accuracy_new), float(comparison.negative_flip_rate)

    def _weight_on_dev(self, preset: str) -> None:
        """``<preset> (λ on dev)``: λ ∈ {0} ∪ ``WEIGHT_GRID`` chosen on validation."""
        plain, seconds = self.model("plain")
        candidates = {0.0: plain}
        for weight in WEIGHT_GRID:
            candidates[weight], spent = self.loss_model(preset, weight)
            seconds += spent
        scores = {w: self.validation_metrics(m) for w, m in candidates.items()}
        floor = scores[0.0][0] - GOAL_ACCURACY_TOLERANCE - 1e-12
        allowed = [w for w, (accuracy, _) in scores.items() if accuracy >= floor]
        chosen = min(allowed, key=lambda w: (scores[w][1], -scores[w][0]))
        self.selections[f"{preset} (λ on dev)"] = {
            "rule": f"lowest validation NFR with validation accuracy ≥ plain − "
            f"{GOAL_ACCURACY_TOLERANCE}",
            "chosen": chosen,
            "curve": [
                {"weight": w, "accuracy": a, "negative_flip_rate": n}
                for w, (a, n) in scores.items()
            ],
        }
        self.add(f"{preset} (λ on dev)", candidates[chosen], seconds, weight=chosen)

    def _selected(self, method: str) -> None:
        """A merge whose old-weight is chosen on validation by ``ALPHA_RULE``."""
        fisher = None
        if method == "output-ensemble":
            new, seconds = self.model("plain")
            build = lambda w: OutputEnsemble(self.old, new, w)  # noqa: E731
        elif method == "bcwi-soup":
            news = [self.model(f"soup-{k}") for k in range(self.recipe.ensemble_size)]
            seconds = sum(s for _, s in news)
            build = interpolation_candidates(self.old, [m for m, _ in news])
        else:
            tuned, seconds = self.model("fine-tuned")
            if method == "bcwi-fisher":
                started = time.perf_counter()
                fisher = fisher_diagonal(
                    self.old, self.scenario.old_train, max_samples=FISHER_SAMPLES
                )
                seconds += time.perf_counter() - started
            build = interpolation_candidates(self.old, tuned, fisher=fisher)
        before = time.perf_counter()
        selection = select_old_weight(
            build, self.scenario.validation, old_model=self.old, rule=ALPHA_RULE
        )
        chosen = build(selection.chosen)
        spent = seconds + (time.perf_counter() - before)
        self.selections[method] = selection.to_dict()
        self.add(method, chosen, spent, old_weight=selection.chosen)


def run_methods(
    scenario: UpdateScenario, recipe: Recipe, seed: int, methods: Sequence[str]
) -> SeedRun:
    """Train the old model and every method of ``methods`` for one seed."""
    run = SeedRun(scenario, recipe, seed)
    for method in methods:
        run.run(method)
        row = run.rows[method]
        print(
            f"  seed {seed} {method:18} acc {100 * row['accuracy_new']:6.2f} NFR "
            f"{100 * row['negative_flip_rate']:5.2f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    return run


def seed_record(run: SeedRun) -> dict[str, Any]:
    """The JSON record of one seed: scenario, old model's time, rows, α selections."""
    return {
        "seed": run.seed,
        "scenario": run.scenario.to_dict(),
        "old_seconds": run.old_seconds,
        "old_test_accuracy": float(
            (run.old_test.argmax(1) == run.scenario.test.labels).float().mean()
        ),
        "methods": run.rows,
        "selections": run.selections,
    }


def stratified_subset(data: LabeledData, size: int, seed: int) -> LabeledData:
    """A stratified subset of about ``size`` samples (all of ``data`` when smaller)."""
    if size >= len(data):
        return data
    labels = data.labels.numpy()
    generator = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        count = max(1, round(size * where.size / labels.size))
        keep.append(generator.choice(where, size=min(count, where.size), replace=False))
    return data.subset(np.sort(np.concatenate(keep)))


def without_weight_on_dev(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods`` less the ``(λ on dev)`` ones, which train 4 more models per preset and seed:
    what the slower CPU settings leave out to fit 30 minutes."""
    return tuple(method for method in methods if not method.endswith(" (λ on dev)"))


def selection_note(table: dict[str, Any], methods: Sequence[str]) -> str:
    """The α (old weights) and λ (loss weights) chosen on validation, mean ± std over seeds."""
    parts = []
    for key, what, digits in (("old_weight", "α (old weight)", ".2f"), ("weight", "λ", ".2g")):
        chosen = [
            f"`{m}` {table[m][key]['mean']:{digits}} ± {table[m][key]['std']:{digits}}"
            for m in methods
            if key in table[m]
        ]
        if chosen:
            parts.append(f"{what} chosen on validation: " + ", ".join(chosen))
    return "; ".join(parts) + "." if parts else ""


def run_scenario(
    name: str,
    args: Any,
    *,
    title: str,
    scenario_for: Callable[[int], UpdateScenario],
    recipe: Recipe,
    methods: Sequence[str],
    config: dict[str, Any],
    notes: Sequence[str],
    published: Callable[[dict[str, Any]], list[str]] = lambda table: [],
    report_inputs: Callable[[UpdateScenario], dict[str, Any]] = lambda scenario: {},
) -> None:
    """Every seed of a neural scenario, its table, goal, JSON, RESULTS.md and HTML report.

    The JSON (and RESULTS.md) is rewritten after every seed, so a run stopped early keeps the
    seeds it finished (``seeds`` lists them, ``seeds_requested`` the whole request); the HTML
    report shows the first seed and is written once it is done.
    """
    methods = chosen_methods(args, methods, always=("plain",))
    timer = Timer()
    runs: list[dict[str, Any]] = []
    html = None
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        run = run_methods(scenario_for(seed), recipe, seed, methods)
        runs.append(seed_record(run))
        if not args.no_report and html is None:
            html = write_html_report(
                run.comparisons,
                args.output,
                f"{title} — seed {run.seed}",
                **report_inputs(run.scenario),
            )
        table = summarise([run["methods"] for run in runs])
        candidates = [m for m in methods if m not in ("plain", "fine-tuned")]
        goal = evaluate_goal(table, "plain", candidates)
        metrics = [
            "accuracy_new",
            "negative_flip_rate",
            "relative_negative_flip_rate",
            "backward_trust_compatibility",
            "backward_error_compatibility",
            "seconds",
        ]
        old_accuracy = mean_std(run["old_test_accuracy"] for run in runs)
        section = {
            "title": (
                f"{title.split(':', 1)[-1].strip()}: test metrics against the old model (old "
                f"accuracy {100 * old_accuracy['mean']:.2f} ± {100 * old_accuracy['std']:.2f} %)"
            ),
            "metrics": metrics,
            "table": table,
            "goal": goal,
            "notes": [note for note in [selection_note(table, methods)] if note],
        }
        result = record(
            name,
            args,
            {
                **config,
                "methods": list(methods),
                "alpha_rule": ALPHA_RULE,
                "alpha_grid": "0, 0.1, …, 1",
                "select_compatible": COMPATIBLE_SELECT,
                "select_plain": "accuracy",
                "fixed_old_weight": FIXED_OLD_WEIGHT,
                "weight_grid": list(WEIGHT_GRID),
                "fisher_samples": FISHER_SAMPLES,
                "old_epochs": recipe.old_epochs,
                "new_epochs": recipe.new_epochs,
                "batch_size": recipe.batch_size,
                "new_from_old": recipe.new_from_old,
                "ensemble_size": recipe.ensemble_size,
                "device": recipe.device,
            },
            timer,
            seeds=[run["seed"] for run in runs],
            seeds_requested=list(args.seeds),
            title=title,
            notes=list(notes),
            published=published(table),
            sections=[section],
            goal=goal,
            report=html,
            runs=runs,
        )
        lines = [f"\n{section['title']}"]
        lines += markdown_table(table, metrics)
        lines += section["notes"] + goal_lines(goal)
        lines += [f"- {text}" for text in result["published"]]
        finish(result, args.output, lines)
