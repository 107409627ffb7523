"""Focus weights and the composed objective, by hand and against the published bugs."""

from __future__ import annotations

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
