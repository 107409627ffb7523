"""A growing label set on digits: the old model knows 0–6, the new models learn 0–9.

``make_update_scenario(load_digits(), old_fraction=0.3, old_classes=0–6, seed=0)``: an old MLP
whose head has 7 rows (the classes it knows, named "0"–"6") trained for 20 epochs on the old
split; new MLPs (10 rows) trained for 20 epochs on the whole new split with plain
cross-entropy, fd-kl, fd-lm and ldi (the old model placed in the new label space by class name,
:func:`~flipless.teachers.teacher_in_label_space`), and bcwi: the old model with its head
widened to 10 rows (rows 7–9 new, :func:`~flipless.models.sources.start_from_old`), fine-tuned
on all classes, then interpolated back with ``new_class_rows`` = rows 7–9, the old-weight
chosen on validation with the flips counted on classes 0–6 only. SGD (lr 0.05, momentum 0.9,
batches of 64, gradient norm clipped at 2); seeds 0, 1, 2, counts summed over them; the test
split (451 images, 317 of classes 0–6) only measures.

Before the growing-label-set fixes, fd-kl distilled the old model's logits of classes it had
never learned and reached 69.6 % test accuracy (plain 96.7 %): the new classes were not
learned. What holds now, and is asserted:

* every method learns the new classes 7–9 about as well as plain training: within 2 points
  (fd-lm within 3: its logit matching on the old classes slows the shared features most);
* distillation acts on the old classes: the negative flips whose new answer is an old class
  (the confusions among 0–6 that the old model got right) are fewer than plain training's for
  every method.

Measured when written (seeds 0–2 summed; negative flips on 0–6 in all / of them into an old
class; accuracy on 7–9, 402 images): plain 16 / 10, 94.3 %; fd-kl 20 / 3, 92.5 %; fd-lm 20 / 1,
91.5 %; ldi 24 / 5, 95.0 %; bcwi 14 / 3, 93.0 %. So the issue's second goal, fewer negative
flips on 0–6 in all, is met by bcwi only, **not** by the distillation presets: the new model answers a new class (7, 8 or 9)
for old-class images the old model got right more often than plain training does, because the
terms constrain only the old classes' logits (renormalised over them, as LwF and iCaRL do) and
nothing in them keeps a new class from rising on an old-class image. Adding the old model's
"the answer is an old class" (−log Σ_{k ∈ old} softmax(z_n)_k) to the terms on old-class
images removes those flips (fd-kl 8 in all) but costs 7 points of accuracy on the new classes.
The margins are small and seed-dependent: on seeds 3–5 bcwi's α (chosen within one point of
the dev accuracy over all classes) costs 3 points on the new classes, and fd-kl with T = 1
(instead of the preset's 100) has fewer flips than plain on seeds 0–2 (13 against 16) but
more on seeds 3–5 (18 against 15).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from flipless import compare
from flipless.data.loaders import load_digits
from flipless.losses import build_loss
from flipless.merge.policy import MergePolicy
from flipless.merge.selection import interpolation_candidates, predict_labels, select_old_weight
from flipless.models import MLP
from flipless.models.sources import start_from_old
from flipless.teachers import CachedTeacher, known_classes, teacher_in_label_space
from flipless.train import TrainSettings, fit, make_update_scenario

pytestmark = pytest.mark.slow

OLD_CLASSES = tuple(range(7))
SEEDS = (0, 1, 2)
EPOCHS = 20
METHODS = ("fd-kl", "fd-lm", "ldi", "bcwi")
NEW_CLASS_TOLERANCE = {"fd-kl": 0.02, "fd-lm": 0.03, "ldi": 0.02, "bcwi": 0.02}


def _sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.05, momentum=0.9)


def _settings(seed: int) -> TrainSettings:
    return TrainSettings(
        epochs=EPOCHS,
        batch_size=64,
        progress="none",
        seed=seed,
        select="last",
        clip_grad_norm=2.0,
    )


@pytest.fixture(scope="module")
def update(one_thread):
    scenario = make_update_scenario(
        load_digits(), old_fraction=0.3, old_classes=OLD_CLASSES, seed=0
    )
    names = scenario.class_names
    torch.manual_seed(100)
    old = MLP(64, len(OLD_CLASSES), hidden=(128,))  # a head row per class it knows
    fit(old, scenario.old_train, optimizer=_sgd, settings=_settings(100))
    teacher = teacher_in_label_space(old, names, len(OLD_CLASSES), names[: len(OLD_CLASSES)])
    assert known_classes(teacher) == OLD_CLASSES
    return scenario, old, teacher


def _trained(scenario, teacher, seed: int, preset: str | None):
    torch.manual_seed(seed)
    model = MLP(64, scenario.num_classes, hidden=(128,))
    options = {} if preset is None else {"objective": build_loss(preset), "teacher": teacher}
    return fit(model, scenario.new_train, optimizer=_sgd, settings=_settings(seed), **options).model


def _bcwi(scenario, old, teacher, seed: int):
    names = scenario.class_names
    torch.manual_seed(seed)
    widened = start_from_old(old, names, names[: len(OLD_CLASSES)])  # rows 7–9 fresh
    start = copy.deepcopy(widened)
    tuned = fit(widened, scenario.new_train, optimizer=_sgd, settings=_settings(seed)).model
    rows = [k for k in range(len(names)) if k not in OLD_CLASSES]
    policy = MergePolicy(0.0, new_class_rows={"head.weight": rows, "head.bias": rows})
    make_candidate = interpolation_candidates(start, tuned, policy=policy)
    selection = select_old_weight(
        make_candidate,
        scenario.validation,
        old_model=teacher.as_model(),
        rule="max-old-weight-within:0.01",
        old_classes=OLD_CLASSES,
    )
    return make_candidate(selection.chosen)


def test_new_classes_are_learned_and_old_class_confusions_drop(update):
    scenario, old, teacher = update
    test = scenario.test
    labels = test.labels.numpy()
    new_class = ~np.isin(labels, OLD_CLASSES)
    old_answers = predict_labels(teacher.as_model(), test)
    assert np.isin(old_answers, OLD_CLASSES).all()  # never a class the old model lacks
    totals = {}
    for seed in SEEDS:
        models = {"plain": _trained(scenario, teacher, seed, None)}
        for method in METHODS:
            if method == "bcwi":
                models[method] = _bcwi(scenario, old, teacher, seed)
            else:
                models[method] = _trained(scenario, teacher, seed, method)
        for method, model in models.items():
            answers = predict_labels(model, test)
            comparison = compare(old_answers, answers, labels, old_classes=OLD_CLASSES)
            assert comparison.restriction.excluded == int(new_class.sum())
            flipped = (old_answers == labels) & (answers != labels) & ~new_class
            assert int(flipped.sum()) == comparison.negative_flips
            into_old = int((flipped & np.isin(answers, OLD_CLASSES)).sum())
            right_new = int((answers[new_class] == labels[new_class]).sum())
            total = totals.setdefault(method, np.zeros(3, dtype=np.int64))
            total += (comparison.negative_flips, into_old, right_new)
    images = len(SEEDS) * int(new_class.sum())
    plain_new_accuracy = totals["plain"][2] / images
    for method in METHODS:
        new_accuracy = totals[method][2] / images
        assert new_accuracy >= plain_new_accuracy - NEW_CLASS_TOLERANCE[method], (
            method,
            totals,
        )
        assert totals[method][1] < totals["plain"][1], (method, totals)


def test_a_config_with_old_classes_masks_the_teacher_and_restricts_the_comparisons(tmp_path):
    """``flipless train`` with ``data.old_classes`` and a cached teacher (its class mask kept)."""
    from flipless import Comparison
    from flipless.train.config import parse_config
    from flipless.train.recipe import run_config

    document = {
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "data": {"name": "digits", "old_classes": [str(k) for k in OLD_CLASSES]},
        "model": {"name": "mlp", "hidden": [32]},
        "old": {"train_epochs": 2},
        "loss": {"preset": "fd-kl", "teacher": "cached"},
        "train": {"epochs": 2, "batch_size": 64, "progress": "none", "select": "last"},
    }
    outcome = run_config(parse_config(document))
    test, scenario = outcome.test_comparison, outcome.scenario
    labels = scenario.test.labels.numpy()
    known = np.isin(labels, OLD_CLASSES)
    assert test.restriction.old_classes == OLD_CLASSES
    assert test.total == int(known.sum()) and test.restriction.excluded == int((~known).sum())
    assert Comparison.from_json(str(outcome.output_dir / "test_comparison.json")).restriction
    validation = outcome.result.comparison
    assert validation.restriction.old_classes == OLD_CLASSES
    assert validation.total == int(np.isin(scenario.validation.labels.numpy(), OLD_CLASSES).sum())
    # the old model (a full-width head trained on 0–6) never answers a class it did not learn
    assert not np.isin(test.instances.old_pred, OLD_CLASSES, invert=True).any()
    cached = CachedTeacher.load(outcome.output_dir / "teacher.safetensors")
    assert known_classes(cached) == OLD_CLASSES
    summary = json.loads((outcome.output_dir / "summary.json").read_text())
    assert summary["test"]["restriction"]["excluded"] == int((~known).sum())
    assert summary["test"]["accuracy_new_all_classes"] == test.restriction.accuracy_new_all
