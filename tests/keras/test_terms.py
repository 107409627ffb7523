"""The keras.ops terms against float64 hand computations and against flipless.losses (torch).

These run in-process on the torch backend of Keras (see conftest.py); test_backends.py runs
the torch comparison on every installed backend.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from flipless.errors import InputError, MismatchError  # noqa: E402
from flipless.keras import terms  # noqa: E402
from flipless.losses import terms as torch_terms  # noqa: E402

NEW = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]
OLD = [[0.5, 0.5, 2.0], [2.0, 0.0, 1.0]]
LABELS = [1, 0]
MASK = [True, False, True]


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


def values(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


def f64(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


# ---------------------------------------------------------------- hand computations (float64)
def hand_kl(new, old, temperature):
    out = []
    for n, o in zip(new, old, strict=True):
        log_new = log_softmax([v / temperature for v in n])
        log_old = log_softmax([v / temperature for v in o])
        out.append(
            temperature**2
            * sum(math.exp(lo) * (lo - ln) for lo, ln in zip(log_old, log_new, strict=True))
        )
    return out


def hand_ldi(new, old, labels, power, margin, members, one_sided=False):
    out = []
    for n, o, y, keep in zip(new, old, labels, members, strict=True):
        total = 0.0
        for k, (a, b) in enumerate(zip(n, o, strict=True)):
            if not keep[k]:
                continue
            change = max((b - a) if k == y else (a - b), 0.0) if one_sided else abs(a - b)
            total += max(change - margin, 0.0) ** power
        out.append(total / max(sum(keep), 1))
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_divergence_by_hand(temperature):
    got = values(terms.kl_divergence(f64(NEW), f64(OLD), temperature=temperature))
    np.testing.assert_allclose(got, hand_kl(NEW, OLD, temperature), rtol=1e-13)
    assert got.dtype == np.float64


def test_kl_divergence_with_class_mask_is_the_kl_over_the_known_classes():
    got = values(terms.kl_divergence(f64(NEW), f64(OLD), temperature=2.0, class_mask=MASK))
    known = [[row[0], row[2]] for row in NEW], [[row[0], row[2]] for row in OLD]
    np.testing.assert_allclose(got, hand_kl(*known, 2.0), rtol=1e-13)


def test_logit_matching_by_hand():
    got = values(terms.logit_matching(f64(NEW), f64(OLD)))
    expected = [
        0.5 * sum((a - b) ** 2 for a, b in zip(n, o, strict=True)) / 3
        for n, o in zip(NEW, OLD, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    masked = values(terms.logit_matching(f64(NEW), f64(OLD), class_mask=MASK))
    np.testing.assert_allclose(
        masked, [0.5 * ((1 - 0.5) ** 2 + (0 - 2) ** 2) / 2, 0.5 * (1.5**2 + 2**2) / 2]
    )


def test_strict_imitation_by_hand_and_differs_from_new_error():
    got = values(terms.strict_imitation(f64(NEW), f64(OLD), temperature=2.0))
    expected = []
    for n, o in zip(NEW, OLD, strict=True):
        log_new = log_softmax([v / 2 for v in n])
        targets = [math.exp(v) for v in log_softmax([v / 2 for v in o])]
        expected.append(-sum(t * ln for t, ln in zip(targets, log_new, strict=True)))
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    cross_entropy = values(terms.new_error(f64(NEW), np.array(LABELS)))
    assert np.abs(values(terms.strict_imitation(f64(NEW), f64(OLD))) - cross_entropy).min() > 0.1


def test_new_error_by_hand():
    got = values(terms.new_error(f64(NEW), np.array(LABELS)))
    expected = [-log_softmax(row)[y] for row, y in zip(NEW, LABELS, strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-14)


@pytest.mark.parametrize(
    ("options", "members"),
    [
        ({}, [[1, 1, 1], [1, 1, 1]]),
        ({"top_k": 1}, [[0, 1, 0], [0, 0, 1]]),  # each row's own top class (new logits)
        ({"top_k": 1, "top_k_by": "teacher"}, [[0, 0, 1], [1, 0, 0]]),
        ({"top_k": 1, "top_k_by": "both"}, [[0, 1, 1], [1, 0, 1]]),
        ({"top_k": 2, "exclude_gt": True}, [[1, 0, 0], [0, 0, 1]]),
        ({"exclude_gt": True}, [[1, 0, 1], [0, 1, 1]]),
    ],
)
def test_ldi_class_sets_are_chosen_per_sample(options, members):
    got = values(terms.ldi_class_set(f64(NEW), f64(OLD), np.array(LABELS), **options))
    np.testing.assert_array_equal(got, np.array(members, dtype=bool))
    penalty = values(
        terms.logit_difference_inhibition(
            f64(NEW), f64(OLD), np.array(LABELS), margin=0.25, **options
        )
    )
    np.testing.assert_allclose(penalty, hand_ldi(NEW, OLD, LABELS, 2.0, 0.25, members), rtol=1e-14)


def test_ldi_one_sided_power_and_class_mask_by_hand():
    got = values(
        terms.logit_difference_inhibition(
            f64(NEW), f64(OLD), np.array(LABELS), power=1.5, margin=0.1, one_sided=True
        )
    )
    np.testing.assert_allclose(
        got, hand_ldi(NEW, OLD, LABELS, 1.5, 0.1, [[1] * 3] * 2, one_sided=True), rtol=1e-14
    )
    masked = values(
        terms.logit_difference_inhibition(f64(NEW), f64(OLD), np.array(LABELS), class_mask=MASK)
    )
    np.testing.assert_allclose(masked, hand_ldi(NEW, OLD, LABELS, 2.0, 0.5, [MASK, MASK]))


def test_ldi_with_an_empty_class_set_is_zero():
    got = values(
        terms.logit_difference_inhibition(
            f64(NEW),
            f64(OLD),
            np.array(LABELS),
            top_k=1,
            exclude_gt=True,
            class_mask=[True, False, False],
        )
    )
    np.testing.assert_array_equal(got, [0.0, 0.0])


# ---------------------------------------------------------------- against flipless.losses (torch)
RNG = np.random.default_rng(7)
N, C = 33, 6
R_NEW, R_OLD = RNG.normal(size=(N, C)) * 3, RNG.normal(size=(N, C)) * 3
R_LABELS = RNG.integers(0, C, N)
R_MASK = np.array([True, True, False, True, True, False])

CASES = [
    ("kl", {"temperature": 1.0}),
    ("kl", {"temperature": 100.0}),
    ("logit_matching", {}),
    ("strict_imitation", {"temperature": 3.0}),
    ("ldi", {}),
    ("ldi", {"power": 1.5, "margin": 0.0}),
    ("ldi", {"top_k": 3}),
    ("ldi", {"top_k": 2, "top_k_by": "teacher", "exclude_gt": True}),
    ("ldi", {"top_k": 2, "top_k_by": "both", "one_sided": True}),
    ("new_error", {}),
]
KERAS = {
    "kl": terms.kl_divergence,
    "logit_matching": terms.logit_matching,
    "strict_imitation": terms.strict_imitation,
    "ldi": terms.logit_difference_inhibition,
    "new_error": terms.new_error,
}
TORCH = {
    "kl": torch_terms.kl_divergence,
    "logit_matching": torch_terms.logit_matching,
    "strict_imitation": torch_terms.strict_imitation,
    "ldi": torch_terms.logit_difference_inhibition,
    "new_error": torch_terms.new_error,
}


def call(function, new, old, labels, mask, options):
    """Call a term of either framework with the inputs it takes."""
    names = inspect.signature(function).parameters
    given = {"new_logits": new, "labels": labels}
    given["teacher_logits" if "teacher_logits" in names else "old_logits"] = old
    if mask is not None:
        given["class_mask"] = mask
    return function(**{key: value for key, value in given.items() if key in names}, **options)


@pytest.mark.parametrize(
    ("kind", "options", "masked"),
    [(kind, options, False) for kind, options in CASES]
    + [(kind, options, True) for kind, options in CASES if kind != "new_error"],
)
def test_terms_equal_the_torch_terms_in_float64(kind, options, masked):
    mask = R_MASK if masked else None
    got = values(call(KERAS[kind], R_NEW, R_OLD, R_LABELS, mask, options))
    expected = call(
        TORCH[kind],
        torch.tensor(R_NEW),
        torch.tensor(R_OLD),
        torch.tensor(R_LABELS),
        None if mask is None else torch.tensor(mask),
        options,
    )
    assert got.dtype == np.float64
    # float64 rounding only (T² = 10⁴ amplifies it for the T = 100 KL)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("kind", "options"), CASES)
def test_gradients_equal_the_torch_gradients_and_never_reach_the_old_logits(kind, options):
    # On the torch backend keras.ops work on torch tensors, so torch.autograd sees both.
    new_k = torch.tensor(R_NEW, requires_grad=True)
    old_k = torch.tensor(R_OLD, requires_grad=True)
    call(KERAS[kind], new_k, old_k, torch.tensor(R_LABELS), None, options).sum().backward()
    new_t = torch.tensor(R_NEW, requires_grad=True)
    call(
        TORCH[kind], new_t, torch.tensor(R_OLD), torch.tensor(R_LABELS), None, options
    ).sum().backward()
    torch.testing.assert_close(new_k.grad, new_t.grad, rtol=1e-12, atol=1e-12)
    assert old_k.grad is None or not old_k.grad.any()
    assert new_k.grad.abs().sum() > 0


def test_options_are_those_of_the_torch_terms():
    inputs = {"new_logits", "teacher_logits", "old_logits", "labels", "class_mask"}
    for kind in KERAS:
        ours = inspect.signature(KERAS[kind]).parameters
        theirs = inspect.signature(TORCH[kind]).parameters
        assert {name: ours[name].default for name in set(ours) - inputs} == {
            name: theirs[name].default for name in set(theirs) - inputs
        }, kind


def test_half_precision_logits_are_computed_in_float32():
    got = terms.kl_divergence(R_NEW.astype(np.float16), R_OLD.astype(np.float16))
    assert str(keras.ops.dtype(got)) == "float32"
    expected = torch_terms.kl_divergence(
        torch.tensor(R_NEW.astype(np.float16)).double(),
        torch.tensor(R_OLD.astype(np.float16)).double(),
    )
    np.testing.assert_allclose(values(got), expected.numpy(), rtol=1e-5)


# ---------------------------------------------------------------- bad inputs
def test_mismatched_shapes_are_errors_that_say_what_was_expected():
    with pytest.raises(MismatchError, match=r"new logits \(2, 3\) and old logits \(2, 2\)"):
        terms.kl_divergence(f64(NEW), f64(OLD)[:, :2])
    with pytest.raises(InputError, match=r"expected \[N, C\] scores"):
        terms.new_error(f64(NEW)[0], np.array(LABELS))
    with pytest.raises(MismatchError, match=r"labels have shape \(3,\) for logits of 2 rows"):
        terms.new_error(f64(NEW), np.array([0, 1, 2]))
    with pytest.raises(MismatchError, match="class_mask must be a bool array of shape"):
        terms.kl_divergence(f64(NEW), f64(OLD), class_mask=[1, 0, 1])
    with pytest.raises(MismatchError, match="class_mask must be a bool array of shape"):
        terms.logit_matching(f64(NEW), f64(OLD), class_mask=[True, False])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_k": 0}, r"top_k=0; expected 1 ≤ top_k ≤ 3"),
        ({"top_k": 4}, r"top_k=4; expected 1 ≤ top_k ≤ 3"),
        ({"top_k": 1, "top_k_by": "old"}, r"top_k_by='old'; expected 'new', 'teacher' or 'both'"),
        ({"power": 0.0}, r"expected power > 0 and margin ≥ 0"),
        ({"margin": -1.0}, r"expected power > 0 and margin ≥ 0"),
    ],
)
def test_bad_ldi_options_are_errors(options, message):
    with pytest.raises(InputError, match=message):
        terms.logit_difference_inhibition(f64(NEW), f64(OLD), np.array(LABELS), **options)


@pytest.mark.parametrize("function", [terms.kl_divergence, terms.strict_imitation])
def test_temperature_must_be_positive(function):
    with pytest.raises(InputError, match=r"temperature=0.0; expected a positive number"):
        function(f64(NEW), f64(OLD), temperature=0.0)
