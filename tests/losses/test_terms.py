"""Each per-sample term against a float64 hand computation, and the published bugs."""

from __future__ import annotations

import math

import pytest
import torch

from flipless import FliplessError
from flipless.losses import terms

NEW = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
OLD = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])


def softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_by_hand(temperature):
    expected = []
    for new, old in zip(NEW.tolist(), OLD.tolist(), strict=True):
        p, q = softmax(old, temperature), softmax(new, temperature)
        expected.append(
            temperature**2 * sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
        )
    got = terms.kl_divergence(NEW, OLD, temperature)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_kl_is_stable_at_the_published_temperature_100():
    big = torch.tensor([[300.0, -300.0], [-50.0, 80.0]], dtype=torch.float64)
    value = terms.kl_divergence(big, big.flip(1), 100.0)
    assert torch.isfinite(value).all() and (value > 0).all()


def test_logit_matching_by_hand():
    # sample 0: diffs (1, 0, -1) → ½ · 2/3; sample 1: (0.5, 1.5, -3) → ½ · (0.25 + 2.25 + 9)/3
    expected = torch.tensor([0.5 * 2 / 3, 0.5 * 11.5 / 3], dtype=torch.float64)
    torch.testing.assert_close(terms.logit_matching(NEW, OLD), expected, rtol=1e-12, atol=0)


def test_ldi_all_classes_by_hand():
    # |d| = (1, 0, 1) and (0.5, 1.5, 3); margin 0.5, p 2: (0.25, 0, 0.25), (0, 1, 6.25)
    got = terms.logit_difference_inhibition(NEW, OLD, LABELS, power=2, margin=0.5)
    expected = torch.tensor([0.5 / 3, 7.25 / 3], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_ldi_exclude_gt_switches_both_ways():
    on = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5, exclude_gt=True)
    off = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5, exclude_gt=False)
    # without the true class: sample 0 keeps classes 1, 2 → (0 + 0.25)/2; sample 1 keeps 0, 2 → 6.25/2
    torch.testing.assert_close(on, torch.tensor([0.125, 3.125], dtype=torch.float64))
    torch.testing.assert_close(off, torch.tensor([0.5 / 3, 7.25 / 3], dtype=torch.float64))


def test_ldi_top_k_is_per_sample_and_changes_the_loss():
    # top-1 by the new logits: sample 0 → class 0 (|d| 1 → 0.25); sample 1 → class 1 (1.5 → 1)
    top1 = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5, top_k=1)
    torch.testing.assert_close(top1, torch.tensor([0.25, 1.0], dtype=torch.float64))
    # by the teacher: sample 0 → class 0; sample 1 → class 2 (|d| 3 → 6.25)
    by_teacher = terms.logit_difference_inhibition(
        NEW, OLD, LABELS, margin=0.5, top_k=1, top_k_by="teacher"
    )
    torch.testing.assert_close(by_teacher, torch.tensor([0.25, 6.25], dtype=torch.float64))
    both = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5, top_k=1, top_k_by="both")
    torch.testing.assert_close(both, torch.tensor([0.25, 7.25 / 2], dtype=torch.float64))


def test_ldi_one_sided_ignores_harmless_changes():
    # sample 0 (y=0): z_y rose by 1 (harmless), class 2 fell by 1 (harmless) → 0
    # sample 1 (y=1): z_y rose (harmless); class 0 rose by 0.5 (≤ margin 0.5 → 0); class 2 fell → 0
    got = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.5, one_sided=True)
    torch.testing.assert_close(got, torch.zeros(2, dtype=torch.float64))
    worse = terms.logit_difference_inhibition(OLD, NEW, LABELS, margin=0.0, one_sided=True, power=1)
    # swapped roles: sample 0: z_y fell by 1, class 2 rose by 1 → (1 + 0 + 1)/3
    assert worse[0].item() == pytest.approx(2 / 3)


def test_strict_imitation_by_hand_and_differs_from_new_error():
    expected = [
        -sum(p * math.log(q) for p, q in zip(softmax(o), softmax(n), strict=True))
        for n, o in zip(NEW.tolist(), OLD.tolist(), strict=True)
    ]
    got = terms.strict_imitation(NEW, OLD)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert not torch.allclose(got, terms.new_error(NEW, LABELS))


def test_new_error_by_hand():
    expected = [
        -math.log(softmax(n)[y]) for n, y in zip(NEW.tolist(), LABELS.tolist(), strict=True)
    ]
    torch.testing.assert_close(
        terms.new_error(NEW, LABELS), torch.tensor(expected, dtype=torch.float64)
    )


def test_class_mask_renormalises_over_known_classes():
    mask = torch.tensor([True, True, False])
    got = terms.kl_divergence(NEW, OLD, class_mask=mask)
    torch.testing.assert_close(got, terms.kl_divergence(NEW[:, :2], OLD[:, :2]))
    with pytest.raises(FliplessError, match="class_mask"):
        terms.kl_divergence(NEW, OLD, class_mask=torch.tensor([1, 0, 1]))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_binary_terms_by_hand():
    new = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    old = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    labels = torch.tensor([[1, 0]])
    bce = [-math.log(sigmoid(1.0)), -math.log(1 - sigmoid(-2.0))]
    torch.testing.assert_close(
        terms.binary_new_error(new, labels), torch.tensor([sum(bce) / 2], dtype=torch.float64)
    )
    soft = [
        -(sigmoid(o) * math.log(sigmoid(n)) + (1 - sigmoid(o)) * math.log(1 - sigmoid(n)))
        for n, o in ((1.0, 0.5), (-2.0, 1.0))
    ]
    torch.testing.assert_close(
        terms.binary_strict_imitation(new, old), torch.tensor([sum(soft) / 2], dtype=torch.float64)
    )
    kl = [
        sigmoid(o) * math.log(sigmoid(o) / sigmoid(n))
        + (1 - sigmoid(o)) * math.log((1 - sigmoid(o)) / (1 - sigmoid(n)))
        for n, o in ((1.0, 0.5), (-2.0, 1.0))
    ]
    torch.testing.assert_close(
        terms.binary_kl_divergence(new, old), torch.tensor([sum(kl) / 2], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    "term",
    [
        lambda n, o: terms.kl_divergence(n, o, 2.0),
        terms.logit_matching,
        lambda n, o: terms.logit_difference_inhibition(n, o, LABELS, margin=0.1, top_k=2),
        terms.strict_imitation,
        lambda n, o: terms.new_error(n, LABELS),
    ],
)
def test_gradcheck(term):
    new = NEW.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda n: term(n, OLD), (new,))


def test_teacher_gets_no_gradient():
    old = OLD.clone().requires_grad_(True)
    new = NEW.clone().requires_grad_(True)
    total = sum(
        t.sum()
        for t in (
            terms.kl_divergence(new, old),
            terms.logit_matching(new, old),
            terms.logit_difference_inhibition(new, old, LABELS),
            terms.strict_imitation(new, old),
        )
    )
    total.backward()
    assert old.grad is None and new.grad is not None


def test_shape_mismatch_is_an_error():
    with pytest.raises(FliplessError, match="differ"):
        terms.kl_divergence(NEW, OLD[:, :2])
