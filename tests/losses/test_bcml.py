"""The BackwardCompatibilityML-named losses against float64 hand computations and BCML's numbers."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flipless import FliplessError
from flipless.errors import FliplessWarning, InputError, MismatchError
from flipless.losses import bcml

# Inputs and two linear models written out by hand, so the logits below are computed without torch.
X = [[1.0, 0.2], [0.1, 0.9], [-1.0, -0.5], [0.4, 0.5]]
OLD_W, OLD_B = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], [0.0, 0.0, 0.2]
NEW_W, NEW_B = [[0.5, -0.5], [0.3, 1.2], [-0.4, 0.1]], [0.1, -0.2, 0.0]
# old logits (1, .2, -1), (.1, .9, -.8), (-1, -.5, 1.7), (.4, .5, -.7): argmax 0, 1, 2, 1.
# With these labels the old model is right on samples 0, 2, 3 (on 3 barely: .5 against .4).
LABELS = [0, 2, 2, 1]
OLD_WRONG_EVERYWHERE = [1, 0, 0, 0]
OLD_RIGHT_EVERYWHERE = [0, 1, 2, 1]

# Sigmoid outputs, 2 labels: the old logits are the inputs themselves (identity weights).
BIN_OLD_W, BIN_OLD_B = [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]
BIN_NEW_W, BIN_NEW_B = [[0.5, -0.5], [0.3, 1.2]], [0.1, -0.2]
BIN_LABELS = [[1, 1], [1, 0], [0, 0], [0, 1]]  # old right (every label) on samples 0 and 2

MULTI = (
    "BCNLLLoss",
    "BCCrossEntropyLoss",
    "BCKLDivergenceLoss",
    "StrictImitationNLLLoss",
    "StrictImitationCrossEntropyLoss",
    "StrictImitationKLDivergenceLoss",
)
BINARY = ("BCBinaryCrossEntropyLoss", "StrictImitationBinaryCrossEntropyLoss")
ALL = MULTI + BINARY
# class → (underlying loss to the labels, dissonance on the support: None means the same loss)
SPEC = {
    "BCNLLLoss": ("ce", None),
    "BCCrossEntropyLoss": ("ce", None),
    "BCKLDivergenceLoss": ("kl_one_hot", None),
    "BCBinaryCrossEntropyLoss": ("bce", None),
    "StrictImitationNLLLoss": ("ce", "soft_ce"),
    "StrictImitationCrossEntropyLoss": ("ce", "soft_ce"),
    "StrictImitationKLDivergenceLoss": ("kl_one_hot", "kl"),
    "StrictImitationBinaryCrossEntropyLoss": ("bce", "soft_bce"),
}


# ---------------------------------------------------------------- hand computations (float64)
def affine(weight, bias, rows):
    return [
        [
            sum(w * v for w, v in zip(w_row, row, strict=True)) + b
            for w_row, b in zip(weight, bias, strict=True)
        ]
        for row in rows
    ]


def log_softmax(row):
    top = max(row)
    log_norm = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_norm for v in row]


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def hand_term(kind, new, old, label):
    """One sample's loss; ``new``/``old`` are logit rows, ``label`` an index or a 0/1 row."""
    if kind == "ce":
        return -log_softmax(new)[label]
    if kind == "kl_one_hot":  # Σ_k t_k (log t_k − log p_k), 0 · log 0 = 0
        targets = [1.0 if k == label else 0.0 for k in range(len(new))]
        return sum(
            (t * math.log(t) if t > 0 else 0.0) - t * log_p
            for t, log_p in zip(targets, log_softmax(new), strict=True)
        )
    if kind == "soft_ce":
        p_old = [math.exp(v) for v in log_softmax(old)]
        return -sum(p * q for p, q in zip(p_old, log_softmax(new), strict=True))
    if kind == "kl":
        log_old, log_new = log_softmax(old), log_softmax(new)
        return sum(math.exp(a) * (a - b) for a, b in zip(log_old, log_new, strict=True))
    if kind == "bce":
        return sum(
            -(t * math.log(sigmoid(z)) + (1 - t) * math.log(1 - sigmoid(z)))
            for z, t in zip(new, label, strict=True)
        ) / len(new)
    if kind == "soft_bce":
        return sum(
            -(sigmoid(o) * math.log(sigmoid(z)) + (1 - sigmoid(o)) * math.log(1 - sigmoid(z)))
            for z, o in zip(new, old, strict=True)
        ) / len(new)
    raise AssertionError(kind)


def old_right(old, label):
    if isinstance(label, list):
        return all((z > 0) == (t == 1) for z, t in zip(old, label, strict=True))
    return max(range(len(old)), key=old.__getitem__) == label


def hand_parts(name, labels, rows=X):
    """Per-sample (base, dissonance, support) from the written-out weights, in plain Python."""
    binary = name in BINARY
    new_logits = affine(*((BIN_NEW_W, BIN_NEW_B) if binary else (NEW_W, NEW_B)), rows)
    old_logits = affine(*((BIN_OLD_W, BIN_OLD_B) if binary else (OLD_W, OLD_B)), rows)
    underlying, imitation = SPEC[name]
    base, dissonance, support = [], [], []
    for new, old, label in zip(new_logits, old_logits, labels, strict=True):
        base.append(hand_term(underlying, new, old, label))
        support.append(old_right(old, label))
        dissonance.append(hand_term(imitation or underlying, new, old, label))
    return base, dissonance, support


def hand_total(name, labels, lambda_c, reduction, rows=X):
    base, dissonance, support = hand_parts(name, labels, rows)
    per_sample = [b + lambda_c * s * d for b, d, s in zip(base, dissonance, support, strict=True)]
    if reduction == "none":
        return torch.tensor(per_sample, dtype=torch.float64)
    total = sum(per_sample)
    return torch.tensor(
        total / len(per_sample) if reduction in ("mean", "batchmean") else total,
        dtype=torch.float64,
    )


# ---------------------------------------------------------------- real models
def linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return layer


class Triple(nn.Module):
    """BackwardCompatibilityML's model contract: (logits, softmax, log_softmax)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        logits = self.inner(x)
        return logits, F.softmax(logits, dim=1), F.log_softmax(logits, dim=1)


class Squeeze(nn.Module):
    """One sigmoid unit per sample: [N, 1] → [N]."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).squeeze(1)


def models(name):
    if name in BINARY:
        return linear(BIN_OLD_W, BIN_OLD_B), linear(BIN_NEW_W, BIN_NEW_B)
    return linear(OLD_W, OLD_B), linear(NEW_W, NEW_B)


def labels_for(name, multi=LABELS):
    return torch.tensor(BIN_LABELS if name in BINARY else multi)


def inputs(rows=X):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("name", ALL)
def test_each_loss_equals_the_hand_computation(name, reduction):
    old, new = models(name)
    loss = getattr(bcml, name)(old, new, lambda_c=0.7)
    got = loss(inputs(), labels_for(name), reduction=reduction)
    labels = BIN_LABELS if name in BINARY else LABELS
    torch.testing.assert_close(got, hand_total(name, labels, 0.7, reduction), rtol=1e-12, atol=0)


def test_the_hand_batch_has_a_partial_support():
    for name in ALL:
        support = hand_parts(name, BIN_LABELS if name in BINARY else LABELS)[2]
        assert 0 < sum(support) < len(support)
        old, new = models(name)
        parts = getattr(bcml, name)(old, new, 1.0).forward_parts(inputs(), labels_for(name))
        assert parts.support.tolist() == support


@pytest.mark.parametrize("name", ALL)
def test_parts_add_up_and_dissonance_is_zero_off_the_support(name):
    old, new = models(name)
    loss = getattr(bcml, name)(old, new, lambda_c=0.3)
    x, y = inputs(), labels_for(name)
    parts = loss.forward_parts(x, y)
    base, dissonance, support = hand_parts(name, BIN_LABELS if name in BINARY else LABELS)
    expected = [d if s else 0.0 for d, s in zip(dissonance, support, strict=True)]
    torch.testing.assert_close(
        parts.base, torch.tensor(base, dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        parts.dissonance, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(loss(x, y, "none"), parts.base + 0.3 * parts.dissonance)


def test_one_sigmoid_unit_per_sample():
    old, new = Squeeze(linear([[1.0, 0.0]], [0.0])), Squeeze(linear([[0.5, -0.5]], [0.1]))
    labels = [1, 1, 0, 0]  # old logits 1, .1, -1, .4: right on samples 0, 1, 2
    for name, imitation in (
        ("BCBinaryCrossEntropyLoss", "bce"),
        ("StrictImitationBinaryCrossEntropyLoss", "soft_bce"),
    ):
        loss = getattr(bcml, name)(old, new, lambda_c=0.5)
        got = loss(inputs(), torch.tensor(labels, dtype=torch.float64), reduction="none")
        expected = []
        for row, t in zip(X, labels, strict=True):
            z_new, z_old = [0.5 * row[0] - 0.5 * row[1] + 0.1], [row[0]]
            right = (z_old[0] > 0) == (t == 1)
            value = hand_term("bce", z_new, z_old, [t]) + 0.5 * right * hand_term(
                imitation, z_new, z_old, [t]
            )
            expected.append(value)
        torch.testing.assert_close(
            got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("name", ALL)
def test_lambda_zero_is_the_plain_loss(name):
    old, new = models(name)
    x, y = inputs(), labels_for(name)
    got = getattr(bcml, name)(old, new, lambda_c=0)(x, y)
    if name in BINARY:
        expected = F.binary_cross_entropy_with_logits(new(x), y.to(torch.float64))
    else:
        expected = F.cross_entropy(new(x), y)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_strict_imitation_differs_from_new_error():
    # BackwardCompatibilityML's StrictImitationCrossEntropyLoss equals its BCCrossEntropyLoss.
    old, new = models("BCCrossEntropyLoss")
    x, y = inputs(), labels_for("BCCrossEntropyLoss")
    new_error = bcml.BCCrossEntropyLoss(old, new, 1.0)(x, y)
    for name in ("StrictImitationCrossEntropyLoss", "StrictImitationNLLLoss"):
        strict = getattr(bcml, name)(old, new, 1.0)(x, y)
        assert abs(strict.item() - new_error.item()) > 1e-3


@pytest.mark.parametrize("lambda_c", [0.0, 0.5, 1.0])
def test_strict_imitation_kl_is_finite(lambda_c):
    old, new = models("StrictImitationKLDivergenceLoss")
    loss = bcml.StrictImitationKLDivergenceLoss(old, new, lambda_c, num_classes=3)
    value = loss(inputs(), labels_for("StrictImitationKLDivergenceLoss"))
    assert math.isfinite(value.item())
    expected = hand_total("StrictImitationKLDivergenceLoss", LABELS, lambda_c, "mean")
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)


def test_kl_to_labels_is_the_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-30.0, 40.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([2, 0])
    got = bcml.kl_to_labels(logits, labels)
    torch.testing.assert_close(
        got, F.cross_entropy(logits, labels, reduction="none"), rtol=1e-12, atol=0
    )
    assert torch.isfinite(got).all()


# ---------------------------------------------------------------- support edge cases
@pytest.mark.parametrize("name", MULTI)
def test_empty_support_gives_the_base_loss(name):
    old, new = models(name)
    x, y = inputs(), torch.tensor(OLD_WRONG_EVERYWHERE)
    loss = getattr(bcml, name)(old, new, lambda_c=1.0)
    got = loss(x, y)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, F.cross_entropy(new(x), y), rtol=1e-12, atol=0)
    assert not loss.forward_parts(x, y).support.any()


@pytest.mark.parametrize("name", BINARY)
def test_empty_support_binary(name):
    old, new = models(name)
    y = torch.tensor([[0, 0], [0, 0], [1, 1], [1, 0]])  # every old prediction has a wrong label
    got = getattr(bcml, name)(old, new, lambda_c=1.0)(inputs(), y)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(new(inputs()), y.double()))


@pytest.mark.parametrize("name", MULTI)
def test_all_correct_batch(name):
    old, new = models(name)
    got = getattr(bcml, name)(old, new, lambda_c=0.4)(
        inputs(), torch.tensor(OLD_RIGHT_EVERYWHERE), "sum"
    )
    torch.testing.assert_close(
        got, hand_total(name, OLD_RIGHT_EVERYWHERE, 0.4, "sum"), rtol=1e-12, atol=0
    )
    assert all(hand_parts(name, OLD_RIGHT_EVERYWHERE)[2])


@pytest.mark.parametrize("name", ALL)
def test_batch_of_one(name):
    old, new = models(name)
    rows = X[3:]
    labels = BIN_LABELS[3:] if name in BINARY else LABELS[3:]
    got = getattr(bcml, name)(old, new, lambda_c=0.9)(inputs(rows), torch.tensor(labels))
    torch.testing.assert_close(got, hand_total(name, labels, 0.9, "mean", rows), rtol=1e-12, atol=0)


# ---------------------------------------------------------------- calls and gradients
def counted(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name", ALL)
def test_each_model_runs_once_per_call(name):
    old, new = models(name)
    old_calls, new_calls = counted(old), counted(new)
    getattr(bcml, name)(old, new, 0.5)(inputs(), labels_for(name))
    assert (old_calls[0], new_calls[0]) == (1, 1)


@pytest.mark.parametrize("name", ALL)
def test_only_the_new_model_gets_gradients(name):
    old, new = models(name)
    loss = getattr(bcml, name)(old, new, 1.0)
    loss(inputs(), labels_for(name)).backward()
    assert all(p.grad is None and not p.requires_grad for p in old.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new.parameters())


def test_old_model_runs_without_autograd_even_if_unfrozen_later():
    old, new = models("StrictImitationNLLLoss")
    loss = bcml.StrictImitationNLLLoss(old, new, 1.0)
    old.requires_grad_(True)  # BackwardCompatibilityML's h1(x_support) call leaks gradients here
    built_graph = []
    old.register_forward_hook(lambda _m, _i, out: built_graph.append(out.requires_grad))
    loss(inputs(), labels_for("StrictImitationNLLLoss")).backward()
    assert built_graph == [False]
    assert all(p.grad is None for p in old.parameters())


def test_gradient_matches_an_independent_expression():
    old, new = models("StrictImitationCrossEntropyLoss")
    x, y = inputs(), labels_for("StrictImitationCrossEntropyLoss")
    bcml.StrictImitationCrossEntropyLoss(old, new, 0.6)(x, y).backward()
    got = new.weight.grad.clone()
    new.zero_grad()
    z_new, z_old = new(x), old(x)
    support = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    soft = -(F.softmax(z_old, 1) * F.log_softmax(z_new, 1)).sum(1)
    (F.cross_entropy(z_new, y, reduction="none") + 0.6 * support * soft).mean().backward()
    torch.testing.assert_close(got, new.weight.grad, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- model outputs
@pytest.mark.parametrize("name", MULTI)
def test_bcml_triples_give_the_same_loss_as_logits(name):
    old, new = models(name)
    x, y = inputs(), labels_for(name)
    plain = getattr(bcml, name)(old, new, 0.8)(x, y)
    triple = getattr(bcml, name)(Triple(old), Triple(new), 0.8)(x, y)
    torch.testing.assert_close(triple, plain, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["BCNLLLoss", "StrictImitationNLLLoss"])
def test_log_softmax_models_work_with_nll(name):
    old, new = models(name)
    x, y = inputs(), labels_for(name)
    plain = getattr(bcml, name)(old, new, 0.8)(x, y)
    as_log_probs = getattr(bcml, name)(
        nn.Sequential(old, nn.LogSoftmax(dim=1)), nn.Sequential(new, nn.LogSoftmax(dim=1)), 0.8
    )(x, y)
    torch.testing.assert_close(as_log_probs, plain, rtol=1e-12, atol=1e-15)


def test_binary_triple_and_list_outputs():
    old, new = models("BCBinaryCrossEntropyLoss")

    class AsList(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return [self.inner(x), torch.sigmoid(self.inner(x))]

    x, y = inputs(), labels_for("BCBinaryCrossEntropyLoss")
    plain = bcml.BCBinaryCrossEntropyLoss(old, new, 0.5)(x, y)
    wrapped = bcml.BCBinaryCrossEntropyLoss(AsList(old), AsList(new), 0.5)(x, y)
    torch.testing.assert_close(wrapped, plain, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- the relation to BCML's numbers
def bcml_dissonance(name, labels):
    """BackwardCompatibilityML's dissonance with its own normalisation, from the hand terms.

    BC NLL / CE: CE averaged over the |S| support samples; BC BCE: F.binary_cross_entropy
    averaged over |S|·C elements; BC KL: F.kl_div's default 'mean', over |S|·C elements;
    strict imitation NLL / BCE: summed (no division); strict imitation CE: CE to the old
    model's argmax labels over |S| (which on S are the labels); strict imitation KL:
    F.kl_div(log p_old, log p_new) takes the (negative) log-probabilities as a target: NaN.
    """
    binary = name in BINARY
    new_logits = affine(*((BIN_NEW_W, BIN_NEW_B) if binary else (NEW_W, NEW_B)), X)
    old_logits = affine(*((BIN_OLD_W, BIN_OLD_B) if binary else (OLD_W, OLD_B)), X)
    on = [
        (n, o, t) for n, o, t in zip(new_logits, old_logits, labels, strict=True) if old_right(o, t)
    ]
    size, classes = len(on), len(new_logits[0])
    if name in ("BCNLLLoss", "BCCrossEntropyLoss"):
        return sum(hand_term("ce", n, o, t) for n, o, t in on) / size
    if name == "StrictImitationCrossEntropyLoss":
        argmax = [max(range(classes), key=o.__getitem__) for _, o, _ in on]
        return sum(hand_term("ce", n, o, a) for (n, o, _), a in zip(on, argmax, strict=True)) / size
    if name == "BCBinaryCrossEntropyLoss":
        return sum(classes * hand_term("bce", n, o, t) for n, o, t in on) / (size * classes)
    if name == "BCKLDivergenceLoss":
        return sum(hand_term("kl_one_hot", n, o, t) for n, o, t in on) / (size * classes)
    if name == "StrictImitationNLLLoss":
        return sum(hand_term("soft_ce", n, o, t) for n, o, t in on)
    if name == "StrictImitationBinaryCrossEntropyLoss":
        return sum(classes * hand_term("soft_bce", n, o, t) for n, o, t in on)
    if name == "StrictImitationKLDivergenceLoss":
        total = 0.0
        for n, o, _ in on:
            for target, log_input in zip(log_softmax(n), log_softmax(o), strict=True):
                total += (
                    target * (math.log(target) if target > 0 else math.nan) - target * log_input
                )
        return total / (size * classes)
    raise AssertionError(name)


# ours = base + λ · factor · theirs, with N = 4 samples, |S| support samples, C classes/labels
FACTOR = {
    "BCNLLLoss": lambda n, s, c: s / n,
    "BCCrossEntropyLoss": lambda n, s, c: s / n,
    "BCBinaryCrossEntropyLoss": lambda n, s, c: s / n,
    "BCKLDivergenceLoss": lambda n, s, c: s * c / n,
    "StrictImitationNLLLoss": lambda n, s, c: 1 / n,
    "StrictImitationBinaryCrossEntropyLoss": lambda n, s, c: 1 / (n * c),
}


@pytest.mark.parametrize("name", sorted(FACTOR))
def test_conversion_from_bcml_normalisation(name):
    labels = BIN_LABELS if name in BINARY else LABELS
    old, new = models(name)
    lambda_c = 0.7
    loss = getattr(bcml, name)(old, new, lambda_c)
    parts = loss.forward_parts(inputs(), labels_for(name))
    size, support, classes = 4, int(parts.support.sum()), new.out_features
    assert 0 < support < size
    theirs = bcml_dissonance(name, labels)
    expected = parts.base.mean() + lambda_c * FACTOR[name](size, support, classes) * theirs
    torch.testing.assert_close(loss(inputs(), labels_for(name)), expected, rtol=1e-12, atol=0)


def test_bcml_strict_imitation_ce_is_their_new_error_and_their_kl_is_nan():
    their_strict = bcml_dissonance("StrictImitationCrossEntropyLoss", LABELS)
    assert their_strict == pytest.approx(bcml_dissonance("BCCrossEntropyLoss", LABELS), rel=1e-15)
    old, new = models("BCCrossEntropyLoss")
    x, y = inputs(), labels_for("BCCrossEntropyLoss")
    ours_new_error = bcml.BCCrossEntropyLoss(old, new, 0.7)(x, y)
    base = F.cross_entropy(new(x), y)
    torch.testing.assert_close(
        ours_new_error, base + 0.7 * (3 / 4) * their_strict, rtol=1e-12, atol=0
    )
    ours_strict = bcml.StrictImitationCrossEntropyLoss(old, new, 0.7)(x, y)
    assert abs((ours_strict - ours_new_error).item()) > 1e-3
    assert math.isnan(bcml_dissonance("StrictImitationKLDivergenceLoss", LABELS))


# ---------------------------------------------------------------- frozen old model, options, repr
def test_old_model_is_frozen_and_kept_in_eval_mode():
    old, new = models("BCCrossEntropyLoss")
    old.train()
    loss = bcml.BCCrossEntropyLoss(old, new, 0.5)
    assert not old.training and not any(p.requires_grad for p in old.parameters())
    loss.train()
    assert not old.training and new.training
    old.train()
    with pytest.warns(FliplessWarning, match="training mode"):
        loss(inputs(), labels_for("BCCrossEntropyLoss"))
    assert not old.training


def test_lambda_can_be_changed_and_is_checked():
    old, new = models("BCCrossEntropyLoss")
    loss = bcml.BCCrossEntropyLoss(old, new, 0.5)
    loss.lambda_c = 2.0
    torch.testing.assert_close(
        loss(inputs(), labels_for("BCCrossEntropyLoss")),
        hand_total("BCCrossEntropyLoss", LABELS, 2.0, "mean"),
        rtol=1e-12,
        atol=0,
    )
    with pytest.raises(InputError, match="finite number ≥ 0"):
        loss.lambda_c = -0.1


def test_repr_names_lambda():
    old, new = models("BCKLDivergenceLoss")
    assert repr(bcml.BCKLDivergenceLoss(old, new, 0.25, num_classes=3)) == (
        "BCKLDivergenceLoss(h1=Linear, h2=Linear, lambda_c=0.25, num_classes=3)"
    )


def test_unknown_keyword_arguments_warn_and_the_default_pivot_is_accepted():
    old, new = models("BCBinaryCrossEntropyLoss")
    with pytest.warns(FliplessWarning, match="ignores the keyword arguments"):
        bcml.BCCrossEntropyLoss(*models("BCCrossEntropyLoss"), 0.5, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bcml.BCBinaryCrossEntropyLoss(old, new, 0.5, discriminan_pivot=0.5)
        bcml.StrictImitationBinaryCrossEntropyLoss(old, new, 0.5, discriminant_pivot=0.5)
    with pytest.raises(InputError, match=r"discriminant_pivot must be 0\.5 here"):
        bcml.StrictImitationBinaryCrossEntropyLoss(old, new, 0.5, discriminant_pivot=0.7)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("lambda_c", [-0.5, math.nan, math.inf, "0.5", True, None])
def test_bad_lambda(lambda_c):
    with pytest.raises(InputError, match=r"lambda_c=.*expected a finite number ≥ 0"):
        bcml.BCCrossEntropyLoss(*models("BCCrossEntropyLoss"), lambda_c)


def test_bad_models():
    old, _ = models("BCCrossEntropyLoss")
    with pytest.raises(InputError, match="same module"):
        bcml.BCCrossEntropyLoss(old, old, 0.5)
    with pytest.raises(InputError, match=r"h2 \(the new model\) must be a torch.nn.Module"):
        bcml.BCCrossEntropyLoss(old, lambda x: x, 0.5)


def test_unknown_reduction():
    loss = bcml.BCNLLLoss(*models("BCNLLLoss"), 0.5)
    with pytest.raises(InputError, match="reduction='elementwise_mean'; expected one of 'mean'"):
        loss(inputs(), labels_for("BCNLLLoss"), reduction="elementwise_mean")


def test_mismatched_widths_hint_at_label_map():
    old = linear(OLD_W[:2], OLD_B[:2])
    loss = bcml.StrictImitationCrossEntropyLoss(old, linear(NEW_W, NEW_B), 0.5)
    with pytest.raises(MismatchError, match=r"h1 returned \(4, 2\) and h2 \(4, 3\).*LabelMap"):
        loss(inputs(), labels_for("StrictImitationCrossEntropyLoss"))


def test_num_classes_must_agree_and_be_positive():
    loss = bcml.StrictImitationKLDivergenceLoss(*models("BCKLDivergenceLoss"), 0.5, num_classes=4)
    with pytest.raises(MismatchError, match="num_classes=4 but the models return 3 classes"):
        loss(inputs(), labels_for("BCKLDivergenceLoss"))
    with pytest.raises(InputError, match="num_classes=0; expected a positive int"):
        bcml.BCKLDivergenceLoss(*models("BCKLDivergenceLoss"), 0.5, num_classes=0)


def test_label_count_must_match_the_batch():
    loss = bcml.BCCrossEntropyLoss(*models("BCCrossEntropyLoss"), 0.5)
    with pytest.raises(MismatchError, match=r"x has shape \(4, 2\) and y \(3,\)"):
        loss(inputs(), torch.tensor(LABELS[:3]))


def test_bad_labels():
    loss = bcml.BCCrossEntropyLoss(*models("BCCrossEntropyLoss"), 0.5)
    with pytest.raises(InputError, match=r"labels must lie in \[0, 3\)"):
        loss(inputs(), torch.tensor([0, 1, 3, 0]))
    with pytest.raises(InputError, match="integer class indices"):
        loss(inputs(), torch.tensor([0.0, 1.0, 2.0, 0.0]))
    binary = bcml.BCBinaryCrossEntropyLoss(*models("BCBinaryCrossEntropyLoss"), 0.5)
    with pytest.raises(InputError, match="binary labels must be 0 or 1"):
        binary(inputs(), torch.tensor([[0.5, 1.0]] * 4))
    with pytest.raises(MismatchError, match=r"y has shape \(4,\) but the sigmoid outputs"):
        binary(inputs(), torch.tensor([0, 1, 0, 1]))


def test_bad_model_outputs():
    class Probabilities(nn.Module):
        def forward(self, x):
            return "not a tensor"

    loss = bcml.BCCrossEntropyLoss(Probabilities(), linear(NEW_W, NEW_B), 0.5)
    with pytest.raises(InputError, match=r"h1 \(the old model\) must return float \[N, C\] logits"):
        loss(inputs(), labels_for("BCCrossEntropyLoss"))
    flat = bcml.BCCrossEntropyLoss(linear(OLD_W, OLD_B), Squeeze(linear([[1.0, 0.0]], [0.0])), 0.5)
    with pytest.raises(FliplessError, match=r"got torch.float64 \(4,\)"):
        flat(inputs(), labels_for("BCCrossEntropyLoss"))
