"""Focus weights and the Keras objective, by hand and against flipless.losses (torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from flipless.errors import InputError, MismatchError  # noqa: E402
from flipless.keras import CompatibilityLoss, build_loss, focus_weights  # noqa: E402
from flipless.keras import terms as keras_terms  # noqa: E402
from flipless.losses import Term  # noqa: E402
from flipless.losses import build_loss as build_torch_loss  # noqa: E402

# old (argmax) right on samples 0, 1; new right on 0, 2 → negative flip: sample 1
NEW = np.array([[3.0, 0.0], [2.0, 0.5], [0.0, 1.0], [1.0, 0.0]])
OLD = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0]])
LABELS = np.array([0, 1, 1, 1])


def values(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


@pytest.mark.parametrize(
    ("rule", "indicator"),
    [
        ("all", [0, 0, 0, 0]),
        ("old_correct", [1, 1, 0, 0]),
        ("neg_flip", [0, 1, 0, 0]),
        ("new_incorrect", [0, 1, 0, 1]),
    ],
)
def test_focus_rules_by_hand(rule, indicator):
    got = values(focus_weights(rule, NEW, OLD, LABELS, base=1.0, boost=5.0))
    np.testing.assert_array_equal(got, [1.0 + 5.0 * m for m in indicator])
    assert got.dtype == np.float64


def test_sample_weights_multiply_the_focus_weights():
    extra = np.array([1.0, 2.0, 0.5, 0.0])
    got = values(focus_weights("old_correct", NEW, OLD, LABELS, 1.0, 5.0, extra))
    np.testing.assert_array_equal(got, [6.0, 12.0, 0.5, 0.0])


def test_focus_weights_carry_no_gradient():
    new = torch.tensor(NEW, requires_grad=True)
    weights = focus_weights("neg_flip", new, OLD, LABELS, 1.0, 5.0)
    assert not weights.requires_grad


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (("sideways", NEW, OLD, LABELS), InputError, "Unknown focus rule 'sideways'"),
        (("all", NEW, OLD, LABELS, -1.0), InputError, "expected non-negative weights"),
        (("old_correct", NEW, None, LABELS), InputError, "needs the old model's logits"),
        (("all", NEW, OLD, LABELS, 1.0, 0.0, np.ones(3)), MismatchError, r"expected \(4,\)"),
    ],
)
def test_bad_focus_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        focus_weights(*arguments)


def test_focal_distillation_equals_the_hand_weighted_mean():
    focal = CompatibilityLoss(
        [Term("kl", focus="old_correct", base=1, boost=5, weight=0.7, options={"temperature": 2.0})]
    )
    total, parts = focal(NEW, LABELS, OLD)
    kl = values(keras_terms.kl_divergence(NEW, OLD, 2.0))
    expected = cross_entropy(NEW, LABELS).mean() + 0.7 * (np.array([6, 6, 1, 1]) * kl).mean()
    np.testing.assert_allclose(values(total), expected, rtol=1e-13)
    assert set(parts) == {"cross_entropy", "kl", "total"}
    np.testing.assert_allclose(values(parts["kl"]), (np.array([6, 6, 1, 1]) * kl).mean())


def test_convex_mix_and_repeated_kinds():
    loss = CompatibilityLoss(
        [
            Term("ldi", mix=0.5, options={"margin": 0.5}),
            Term("new_error", focus="old_correct", base=0, boost=1, weight=2.0),
            Term("new_error", focus="neg_flip", base=0, boost=1, weight=1.0),
        ]
    )
    total, parts = loss(NEW, LABELS, OLD)
    ce = cross_entropy(NEW, LABELS)
    ldi = values(keras_terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5)).mean()
    expected = 0.5 * ce.mean() + 0.5 * ldi + 2.0 * (np.array([1, 1, 0, 0]) * ce).mean() + ce[1] / 4
    np.testing.assert_allclose(values(total), expected, rtol=1e-13)
    assert loss.part_names == ["ldi", "new_error.1", "new_error.2"]
    assert set(parts) == {"cross_entropy", "ldi", "new_error.1", "new_error.2", "total"}


def test_keras_sample_weights_weight_the_cross_entropy_too():
    loss = build_loss("new-error")
    weights = np.array([1.0, 0.0, 2.0, 0.5])
    total, _ = loss(NEW, LABELS, OLD, sample_weights=weights)
    ce = cross_entropy(NEW, LABELS)
    expected = (weights * ce).mean() + (weights * np.array([1, 1, 0, 0]) * ce).mean()
    np.testing.assert_allclose(values(total), expected, rtol=1e-13)


@pytest.mark.parametrize(
    "preset", ["fd-kl", "fd-lm", "ldi", "elodi", "strict-imitation", "new-error"]
)
def test_presets_equal_the_torch_objective_in_float64(preset):
    rng = np.random.default_rng(3)
    new, old = rng.normal(size=(40, 7)) * 2, rng.normal(size=(40, 7)) * 2
    labels = rng.integers(0, 7, 40)
    old[:20, :] += 4 * np.eye(7)[labels[:20]]  # the old model right on about half the samples
    total, parts = build_loss(preset)(new, labels, old)
    torch_total, torch_parts = build_torch_loss(preset)(
        torch.tensor(new), torch.tensor(labels), torch.tensor(old)
    )
    assert set(parts) == set(torch_parts)
    for name in parts:
        np.testing.assert_allclose(
            values(parts[name]), torch_parts[name].numpy(), rtol=1e-10, err_msg=name
        )
    np.testing.assert_allclose(values(total), torch_total.numpy(), rtol=1e-10)


def test_class_mask_keeps_unknown_classes_out_of_the_terms_and_the_focus():
    # the old model knows classes 0 and 1; its (placeholder) logit for class 2 is the largest
    old = np.array([[2.0, 0.0, 9.0], [0.0, 1.0, 9.0]])
    new = np.array([[1.0, 0.5, 0.0], [0.2, 0.1, 0.3]])
    labels = np.array([0, 1])
    mask = np.array([True, True, False])
    loss = build_loss("fd-kl", temperature=1.0)
    total, parts = loss(new, labels, old, class_mask=mask)
    torch_total, _ = build_torch_loss("fd-kl", temperature=1.0)(
        torch.tensor(new), torch.tensor(labels), torch.tensor(old), class_mask=torch.tensor(mask)
    )
    np.testing.assert_allclose(values(total), torch_total.numpy(), rtol=1e-12)
    # both samples count as old-correct (weight 6) once class 2 is out of the old model's argmax
    kl = values(keras_terms.kl_divergence(new, old, class_mask=mask))
    np.testing.assert_allclose(values(parts["kl"]), (6 * kl).mean(), rtol=1e-13)


def test_samples_of_classes_the_old_model_does_not_know_match_the_torch_objective():
    # sample 1's label (2) is a class the old model never had: teacher terms leave it out and
    # a mix term gives it back its full cross-entropy, as flipless.losses does
    old = np.array([[2.0, 0.0, -1e9], [0.0, 1.0, -1e9], [1.0, 3.0, -1e9]])
    new = np.array([[1.0, 0.5, 0.0], [0.2, 0.1, 2.3], [0.4, 0.9, 0.1]])
    labels = np.array([0, 2, 1])
    mask = np.array([True, True, False])
    for preset in ("fd-kl", "fd-lm", "ldi"):
        total, parts = build_loss(preset)(new, labels, old, class_mask=mask)
        torch_total, torch_parts = build_torch_loss(preset)(
            torch.tensor(new),
            torch.tensor(labels),
            torch.tensor(old),
            class_mask=torch.tensor(mask),
        )
        np.testing.assert_allclose(values(total), torch_total.numpy(), rtol=1e-12, err_msg=preset)
        for name in parts:
            np.testing.assert_allclose(
                values(parts[name]), torch_parts[name].numpy(), rtol=1e-12, err_msg=name
            )


def test_no_nan_when_the_old_model_is_never_right():
    wrong_old = np.array([[0.0, 5.0], [5.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    total, parts = build_loss("new-error")(NEW, LABELS, wrong_old)
    assert values(parts["new_error"]) == 0.0
    np.testing.assert_allclose(values(total), cross_entropy(NEW, LABELS).mean(), rtol=1e-13)


def test_the_old_logits_get_no_gradient_and_the_new_ones_do():
    new = torch.tensor(NEW, requires_grad=True)
    old = torch.tensor(OLD, requires_grad=True)
    total, _ = build_loss("fd-kl", temperature=2.0)(new, LABELS, old)
    total.backward()
    assert old.grad is None
    reference_new = torch.tensor(NEW, requires_grad=True)
    reference, _ = build_torch_loss("fd-kl", temperature=2.0)(
        reference_new, torch.tensor(LABELS), torch.tensor(OLD)
    )
    reference.backward()
    torch.testing.assert_close(new.grad, reference_new.grad, rtol=1e-12, atol=1e-14)


def test_build_loss_takes_the_registry_overrides():
    loss = build_loss("fd-kl", temperature=10, boost=2, ce_weight=0.5)
    (term,) = loss.terms
    assert (term.kind, term.focus, term.base, term.boost, term.weight) == (
        "kl",
        "old_correct",
        1.0,
        2,
        1.0,
    )
    assert term.options == {"temperature": 10}
    assert loss.ce_weight == 0.5
    assert build_loss("ldi", mix=0.2).ce_weight == pytest.approx(0.8)
    with pytest.raises(InputError, match="has no setting 'tau'"):
        build_loss("fd-kl", tau=3)


def test_config_round_trip_gives_the_same_objective():
    loss = CompatibilityLoss(
        [Term("ldi", mix=0.3, options={"top_k": 2, "top_k_by": "both"}), Term("kl", weight=0.5)],
        ce_weight=2.0,
    )
    again = CompatibilityLoss.from_config(loss.get_config())
    assert again.terms == loss.terms and again.ce_weight == loss.ce_weight
    np.testing.assert_array_equal(
        values(again(NEW, LABELS, OLD)[0]), values(loss(NEW, LABELS, OLD)[0])
    )


@pytest.mark.parametrize("preset", ["bct", "cna"])
def test_torch_only_presets_are_errors_naming_what_is_supported(preset):
    with pytest.raises(
        InputError, match=rf"The preset '{preset}' uses the term .* expected one of kl"
    ):
        build_loss(preset)


def test_bad_objectives_and_calls():
    with pytest.raises(InputError, match="does not provide"):
        CompatibilityLoss([Term("binary_kl", weight=1.0)])
    with pytest.raises(InputError, match=r"must be flipless\.losses\.Term objects"):
        CompatibilityLoss(["kl"])
    with pytest.raises(InputError, match=r"add up to 1\.5; expected at most 1"):
        CompatibilityLoss([Term("kl", mix=0.8), Term("ldi", mix=0.7)])
    with pytest.raises(InputError, match="ce_weight=-1; expected ≥ 0"):
        CompatibilityLoss([], ce_weight=-1)
    with pytest.raises(InputError, match="needs the old model's logits"):
        build_loss("fd-kl")(NEW, LABELS)
    with pytest.raises(MismatchError, match=r"labels have shape \(3,\) for logits of 4 rows"):
        build_loss("fd-kl")(NEW, LABELS[:3], OLD)
    with pytest.raises(MismatchError, match="class_mask must be a bool array of shape"):
        build_loss("new-error")(NEW, LABELS, OLD, class_mask=np.array([1, 0]))
    with pytest.raises(MismatchError, match=r"sample_weights has shape \(4, 1\); expected \[N\]"):
        build_loss("fd-kl")(NEW, LABELS, OLD, sample_weights=np.ones((4, 1)))


def test_a_plain_cross_entropy_objective_needs_no_old_model():
    loss = CompatibilityLoss(
        [Term("new_error", focus="new_incorrect", boost=1.0, base=0.0, weight=1.0)]
    )
    assert not loss.needs_old
    total, _ = loss(NEW, LABELS)
    ce = cross_entropy(NEW, LABELS)
    np.testing.assert_allclose(
        values(total), ce.mean() + (np.array([0, 1, 0, 1]) * ce).mean(), rtol=1e-13
    )
