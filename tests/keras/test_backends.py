"""flipless.keras on every installed Keras backend against flipless.losses (torch), float64.

Keras fixes its backend when first imported, so ``backend_worker.py`` runs once per backend
in its own process (``KERAS_BACKEND=…``, JAX with ``jax_enable_x64``); this file compares
what it wrote with the PyTorch implementation: every term and option (values and gradients,
and no gradient into the old logits), the focus rules, the presets, and a real ``fit`` /
``evaluate`` (the step compiled the backend's default way: eager torch, ``jax.jit``,
``tf.function``) whose flip metrics must equal :func:`flipless.compare`. A backend that is
not installed is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import flipless
from flipless.losses import build_loss, focus_weights
from flipless.losses import terms as torch_terms

WORKER = Path(__file__).with_name("backend_worker.py")
BACKENDS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}  # backend → module
INSTALL = {"jax": "pip install jax", "tensorflow": "pip install tensorflow-cpu"}
CASES = [
    {"kind": "kl", "options": {"temperature": 1.0}},
    {"kind": "kl", "options": {"temperature": 100.0}},
    {"kind": "logit_matching", "options": {}},
    {"kind": "strict_imitation", "options": {"temperature": 3.0}},
    {"kind": "ldi", "options": {}},
    {"kind": "ldi", "options": {"power": 1.5, "margin": 0.0, "one_sided": True}},
    {"kind": "ldi", "options": {"top_k": 3, "top_k_by": "both", "exclude_gt": True}},
    {"kind": "ldi", "options": {"top_k": 2, "top_k_by": "teacher"}},
    {"kind": "new_error", "options": {}},
]
CASES += [{**case, "masked": True} for case in CASES if case["kind"] != "new_error"]
CASES = [{"masked": False, **case} for case in CASES]
PRESETS = ["fd-kl", "fd-lm", "ldi", "elodi", "strict-imitation", "new-error"]
TORCH = {
    "kl": torch_terms.kl_divergence,
    "logit_matching": torch_terms.logit_matching,
    "strict_imitation": torch_terms.strict_imitation,
    "ldi": torch_terms.logit_difference_inhibition,
    "new_error": torch_terms.new_error,
}
FLIP_RATES = (
    "negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)

pytestmark = pytest.mark.slow  # one process per backend, each importing Keras (≈10 s)


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    size, classes = 48, 6
    labels = rng.integers(0, classes, size)
    old = rng.normal(size=(size, classes)) * 2
    old[: size // 2] += 4 * np.eye(classes)[labels[: size // 2]]  # old right on about half
    return {
        "new": rng.normal(size=(size, classes)) * 2,
        "old": old,
        "labels": labels,
        "mask": np.array([True, True, False, True, True, False]),
        "weights": rng.uniform(0, 2, size),
    }


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request, tmp_path_factory) -> tuple[str, dict[str, np.ndarray]]:
    """(backend, what the worker computed on it)."""
    name = request.param
    if importlib.util.find_spec(BACKENDS[name]) is None:
        pytest.skip(f"the {name} backend is not installed here ({INSTALL[name]} to test it)")
    folder = tmp_path_factory.mktemp(f"keras-{name}")
    source, target = folder / "in.npz", folder / "out.npz"
    np.savez(source, spec=np.array(json.dumps({"cases": CASES, "presets": PRESETS})), **inputs())
    completed = subprocess.run(
        [sys.executable, str(WORKER), str(source), str(target)],
        env={**os.environ, "KERAS_BACKEND": name},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    outputs = dict(np.load(target))
    assert str(outputs["backend"]) == name
    return name, outputs


def torch_term(case: dict, new, old, labels, mask) -> torch.Tensor:
    options = dict(case["options"])
    if case["masked"]:
        options["class_mask"] = torch.tensor(mask)
    function = TORCH[case["kind"]]
    if case["kind"] == "new_error":
        return function(new, labels)
    if case["kind"] == "ldi":
        return function(new, old, labels, **options)
    return function(new, old, **options)


def test_every_term_equals_the_torch_term_in_float64(backend):
    name, outputs = backend
    data = inputs()
    for index, case in enumerate(CASES):
        expected = torch_term(
            case,
            torch.tensor(data["new"]),
            torch.tensor(data["old"]),
            torch.tensor(data["labels"]),
            data["mask"],
        )
        assert str(outputs[f"dtype/{index}"]) == "float64", (name, case)
        np.testing.assert_allclose(
            outputs[f"term/{index}"],
            expected.numpy(),
            rtol=1e-10,  # rounding only; T² = 10⁴ amplifies it for the T = 100 KL
            atol=1e-12,
            err_msg=f"{name} {case}",
        )


def test_gradients_equal_torch_and_never_reach_the_old_logits(backend):
    name, outputs = backend
    data = inputs()
    for index, case in enumerate(CASES):
        if case["masked"]:
            continue
        new = torch.tensor(data["new"], requires_grad=True)
        torch_term(
            case, new, torch.tensor(data["old"]), torch.tensor(data["labels"]), data["mask"]
        ).sum().backward()
        np.testing.assert_allclose(
            outputs[f"grad_new/{index}"],
            new.grad.numpy(),
            rtol=1e-10,
            atol=1e-12,
            err_msg=f"{name} {case}",
        )
        assert not outputs[f"grad_old/{index}"].any(), (name, case)


def test_focus_rules_and_presets_equal_torch(backend):
    name, outputs = backend
    data = inputs()
    new, old = torch.tensor(data["new"]), torch.tensor(data["old"])
    labels, weights = torch.tensor(data["labels"]), torch.tensor(data["weights"])
    for rule in ("all", "old_correct", "neg_flip", "new_incorrect"):
        expected = focus_weights(rule, new, old, labels, 0.5, 3.0, weights)
        np.testing.assert_array_equal(outputs[f"focus/{rule}"], expected.numpy(), err_msg=rule)
    for preset in PRESETS:
        _, parts = build_loss(preset)(new, labels, old)
        for part, value in parts.items():
            np.testing.assert_allclose(
                outputs[f"objective/{preset}/{part}"],
                value.numpy(),
                rtol=1e-10,
                err_msg=f"{name} {preset} {part}",
            )


def test_fit_trains_compatibly_and_its_flip_metrics_equal_compare(backend):
    name, outputs = backend
    assert bool(outputs["fit/old_unchanged"]), name
    history = json.loads(str(outputs["fit/history"]))
    assert {"loss", "kl", "negative_flip_rate", "val_negative_flip_rate"} <= set(history)
    assert all(np.isfinite(values).all() for values in history.values()), history
    assert history["loss"][1] < history["loss"][0]
    logs = json.loads(str(outputs["fit/evaluate"]))
    comparison = flipless.compare(
        outputs["fit/old_predictions"], outputs["fit/new_predictions"], outputs["fit/labels"]
    )
    for rate in FLIP_RATES:
        assert logs[rate] == pytest.approx(getattr(comparison, rate), rel=1e-6), (name, rate)
    cached = json.loads(str(outputs["fit/evaluate_cached"]))
    # The cached teacher's old logits come from old.predict, the live teacher's from the old
    # model inside the compiled step: programs that may sum in another order. fd-kl's
    # T² · KL at T = 100 is a small difference of log-probabilities near log(1/10), scaled
    # by T² = 10⁴, so one ulp of float32 in a log-probability (1.2e-7 · 2.3) becomes ~3e-3
    # per sample: in float32 the cached and live kl differed by 3.2e-5 relative on one CPU
    # (JAX, jit). The worker therefore fits and evaluates in float64 (keras floatx), where
    # the same amplification leaves ~1e-11: 1e-5 relative holds on any CPU.
    assert cached == pytest.approx(logs, rel=1e-5), name
