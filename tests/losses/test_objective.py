"""Focus weights and the composed objective, by hand and against the published bugs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flipless import FliplessError
from flipless.losses import CompatibilityLoss, Term, focus_weights, terms

# teacher (argmax) right on samples 0, 1; new right on 0, 2 → negative flip: sample 1
NEW = torch.tensor([[3.0, 0.0], [2.0, 0.5], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
OLD = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 1, 1])


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
    got = focus_weights(rule, NEW, OLD, LABELS, base=1.0, boost=5.0)
    expected = torch.tensor([1.0 + 5.0 * m for m in indicator], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_user_sample_weights_multiply():
    extra = torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    got = focus_weights("old_correct", NEW, OLD, LABELS, 1.0, 5.0, extra)
    torch.testing.assert_close(got, torch.tensor([6.0, 12.0, 0.5, 0.0], dtype=torch.float64))


def test_focal_distillation_focuses_and_equals_the_hand_weighted_mean():
    kl = terms.kl_divergence(NEW, OLD, 2.0)
    focal = CompatibilityLoss(
        [Term("kl", focus="old_correct", base=1, boost=5, weight=0.7, options={"temperature": 2.0})]
    )
    total, parts = focal(NEW, LABELS, OLD)
    weights = torch.tensor([6.0, 6.0, 1.0, 1.0], dtype=torch.float64)
    expected = F.cross_entropy(NEW, LABELS) + 0.7 * (weights * kl).mean()
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)
    plain = CompatibilityLoss([Term("kl", weight=0.7, options={"temperature": 2.0})])
    assert not torch.allclose(plain(NEW, LABELS, OLD)[0], total)  # boost > 0 really focuses
    assert set(parts) == {"cross_entropy", "kl", "total"}


def test_convex_mix_and_several_terms():
    loss = CompatibilityLoss(
        [
            Term("ldi", mix=0.5, options={"margin": 0.5}),
            Term("new_error", focus="old_correct", base=0, boost=1, weight=2.0),
        ]
    )
    total, _ = loss(NEW, LABELS, OLD)
    ldi = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5).mean()
    new_error = (
        torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64) * terms.new_error(NEW, LABELS)
    ).mean()
    expected = 0.5 * F.cross_entropy(NEW, LABELS) + 0.5 * ldi + 2.0 * new_error
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)


def test_no_nan_at_zero_strength_or_without_old_correct_samples():
    # the teacher is wrong on every sample: the old_correct focus selects nobody
    wrong_teacher = torch.tensor([[0.0, 5.0], [5.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    for strength in (0.0, 1.0):
        loss = CompatibilityLoss(
            [Term("new_error", focus="old_correct", base=0, boost=1, weight=strength)]
        )
        total, parts = loss(NEW, LABELS, wrong_teacher.double())
        assert torch.isfinite(total) and parts["new_error"] == 0
        torch.testing.assert_close(total, F.cross_entropy(NEW, LABELS))


def test_teacher_logits_get_no_gradient_and_student_does():
    new = NEW.clone().requires_grad_(True)
    old = OLD.clone().requires_grad_(True)
    loss = CompatibilityLoss(
        [Term("strict_imitation", focus="old_correct", base=0, boost=1, weight=1.0)]
    )
    loss(new, LABELS, old)[0].backward()
    assert old.grad is None and new.grad is not None and torch.isfinite(new.grad).all()


def test_batch_of_one():
    loss = CompatibilityLoss([Term("kl", focus="old_correct", base=1, boost=5, weight=1.0)])
    total, _ = loss(NEW[:1], LABELS[:1], OLD[:1])
    assert total.shape == () and torch.isfinite(total)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Term("kl"), "exactly one of weight"),
        (lambda: Term("kl", weight=1.0, mix=0.5), "exactly one of weight"),
        (lambda: Term("nope", weight=1.0), "Unknown term"),
        (lambda: Term("kl", mix=1.5), "mix=1.5"),
        (lambda: CompatibilityLoss([Term("kl", mix=0.6), Term("ldi", mix=0.6)]), "add up to"),
        (lambda: CompatibilityLoss([Term("kl", weight=1), Term("binary_kl", weight=1)]), "Binary"),
    ],
)
def test_bad_configurations(build, match):
    with pytest.raises(FliplessError, match=match):
        build()


def test_missing_teacher_and_bad_shapes():
    loss = CompatibilityLoss([Term("new_error", focus="old_correct", base=0, boost=1, weight=1.0)])
    with pytest.raises(FliplessError, match="needs the teacher"):
        loss(NEW, LABELS)
    with pytest.raises(FliplessError, match="differ"):
        loss(NEW, LABELS, OLD[:3])


def test_part_names_are_the_kinds_and_stay_tracker_friendly():
    loss = CompatibilityLoss(
        [
            Term("kl", weight=1.0, options={"temperature": 2.0}),
            Term("kl", weight=0.5, options={"temperature": 4.0}),
            Term("ldi", mix=0.2),
        ]
    )
    _, parts = loss(NEW, LABELS, OLD)
    assert list(parts) == ["cross_entropy", "kl.0", "kl.1", "ldi", "total"]
    torch.testing.assert_close(parts["kl.1"], terms.kl_divergence(NEW, OLD, 4.0).mean())


def test_focus_uses_only_the_classes_the_teacher_knows():
    # the old model knows classes 0 and 1 of 3; its logits are all negative, so the 0 that the
    # label map puts in column 2 would win a plain argmax
    teacher = torch.tensor([[-3.0, -1.0, 0.0], [-1.0, -3.0, 0.0]], dtype=torch.float64)
    new = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 1])
    known = torch.tensor([True, True, False])
    loss = CompatibilityLoss([Term("new_error", focus="old_correct", base=0, boost=1, weight=1.0)])
    _, parts = loss(new, labels, teacher, class_mask=known)
    # old right on sample 0 only (argmax over the known classes: 1 and 0)
    expected = F.cross_entropy(new[:1], labels[:1], reduction="sum") / 2
    torch.testing.assert_close(parts["new_error"], expected)


# --------------------------------------------------------------------------- growing label set
# The teacher knows classes 0 and 1 of 3; sample 1's label (2) is a class it never had.
GROW_NEW = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.4, 2.0]], dtype=torch.float64)
GROW_OLD = torch.tensor([[2.0, 0.0, -1e9], [0.0, 1.0, -1e9]], dtype=torch.float64)
GROW_LABELS = torch.tensor([0, 2])
KNOWN = torch.tensor([True, True, False])


def _cross_entropy(logits: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def _renormalised_kl(new: list[float], old: list[float]) -> float:
    """KL over classes 0 and 1 of the softmaxes renormalised over them, by hand."""
    p = [math.exp(v) / (math.exp(old[0]) + math.exp(old[1])) for v in old[:2]]
    q = [math.exp(v) / (math.exp(new[0]) + math.exp(new[1])) for v in new[:2]]
    return sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True))


def test_distillation_leaves_out_samples_of_classes_the_teacher_does_not_know():
    loss = CompatibilityLoss([Term("kl", weight=2.0, options={"temperature": 1.0})])
    total, parts = loss(GROW_NEW, GROW_LABELS, GROW_OLD, class_mask=KNOWN)
    new, old = GROW_NEW.tolist(), GROW_OLD.tolist()
    kl_first = _renormalised_kl(new[0], old[0])  # sample 1 is left out: k_1 = 0
    ce = [_cross_entropy(new[0], 0), _cross_entropy(new[1], 2)]
    torch.testing.assert_close(parts["kl"].item(), kl_first / 2, rtol=1e-13, atol=0)
    torch.testing.assert_close(total.item(), sum(ce) / 2 + 2.0 * kl_first / 2, rtol=1e-13, atol=0)


def test_a_mixed_term_gives_unknown_class_samples_the_full_cross_entropy():
    loss = CompatibilityLoss([Term("ldi", mix=0.5, options={"margin": 0.0})])
    total, parts = loss(GROW_NEW, GROW_LABELS, GROW_OLD, class_mask=KNOWN)
    new, old = GROW_NEW.tolist(), GROW_OLD.tolist()
    ldi_first = sum((new[0][k] - old[0][k]) ** 2 for k in (0, 1)) / 2  # over the known classes
    ce = [_cross_entropy(new[0], 0), _cross_entropy(new[1], 2)]
    expected = (0.5 * ce[0] + 1.0 * ce[1]) / 2 + 0.5 * ldi_first / 2
    torch.testing.assert_close(total.item(), expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(parts["cross_entropy"].item(), sum(ce) / 2, rtol=1e-13, atol=0)
    # with every label known, the objective is the plain convex mix
    all_known = torch.tensor([0, 1])
    total, _ = loss(GROW_NEW, all_known, GROW_OLD, class_mask=KNOWN)
    ldi = [sum((new[i][k] - old[i][k]) ** 2 for k in (0, 1)) / 2 for i in (0, 1)]
    ce = [_cross_entropy(new[0], 0), _cross_entropy(new[1], 1)]
    torch.testing.assert_close(
        total.item(), 0.5 * sum(ce) / 2 + 0.5 * sum(ldi) / 2, rtol=1e-13, atol=0
    )


@pytest.mark.parametrize("preset", ["fd-kl", "fd-lm", "ldi", "strict-imitation"])
def test_unknown_class_samples_get_only_the_label_gradient(preset):
    from flipless.losses import build_loss

    new = GROW_NEW.clone().requires_grad_(True)
    total, _ = build_loss(preset)(new, GROW_LABELS, GROW_OLD, class_mask=KNOWN)
    total.backward()
    plain = GROW_NEW.clone().requires_grad_(True)
    F.cross_entropy(plain, GROW_LABELS, reduction="sum").div(2).backward()
    # sample 1 (label 2, unknown to the teacher) learns from its label alone, fully weighted
    torch.testing.assert_close(new.grad[1], plain.grad[1], rtol=1e-13, atol=1e-15)


def test_the_renormalised_kl_ignores_the_new_class_logit_and_a_shift_of_the_old_ones():
    new = GROW_NEW[:1].clone().requires_grad_(True)
    kl = terms.kl_divergence(new, GROW_OLD[:1], class_mask=KNOWN)
    kl.sum().backward()
    assert new.grad[0, 2].item() == 0.0  # no push of the new class's logit either way
    shifted = GROW_NEW[:1] + torch.tensor([[3.0, 3.0, -7.0]], dtype=torch.float64)
    torch.testing.assert_close(
        terms.kl_divergence(shifted, GROW_OLD[:1], class_mask=KNOWN),
        kl.detach(),
        rtol=1e-13,
        atol=0,
    )


def test_a_class_mask_of_the_wrong_shape_is_refused():
    loss = CompatibilityLoss([Term("kl", weight=1.0)])
    with pytest.raises(FliplessError, match=r"class_mask must be a bool tensor of shape \(3,\)"):
        loss(GROW_NEW, GROW_LABELS, GROW_OLD, class_mask=torch.tensor([True, False]))
