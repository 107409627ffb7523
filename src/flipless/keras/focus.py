"""Focus weights in ``keras.ops``: which samples a compatibility term should care about most.

The rules of :mod:`flipless.losses.focus` (positive-congruent training, Yan et al., CVPR 2021):

    w_i = (base + boost · m_i) · sample_weight_i

* ``all``:           m_i = 0;
* ``old_correct``:   m_i = 1[ŷ_old = y]   (focal distillation: base 1, boost 5);
* ``neg_flip``:      m_i = 1[ŷ_old = y ∧ ŷ_new ≠ y];
* ``new_incorrect``: m_i = 1[ŷ_new ≠ y].

ŷ is the argmax of a model's logits; no gradient flows through w.
"""

from __future__ import annotations

from keras import ops

from flipless.errors import InputError, MismatchError
from flipless.keras.terms import (
    Tensor,
    as_float,
    as_labels,
    check_labels,
    check_logits,
    static_shape,
)
from flipless.losses.focus import FOCUS_RULES


def correct(logits: Tensor, labels: Tensor) -> Tensor:
    """1[argmax_k z_k = y] per sample, as bool [N]."""
    predicted = ops.cast(ops.argmax(ops.convert_to_tensor(logits), axis=1), "int32")
    return ops.equal(predicted, as_labels(labels))


def focus_weights(
    rule: str,
    new_logits: Tensor,
    old_logits: Tensor | None,
    labels: Tensor,
    base: float = 1.0,
    boost: float = 0.0,
    sample_weights: Tensor | None = None,
) -> Tensor:
    """w_i = (base + boost · m_i) · sample_weight_i, shape [N], without gradient.

    ``old_logits`` may be None for the rules that do not look at the old model
    (``all``, ``new_incorrect``).
    """
    if rule not in FOCUS_RULES:
        raise InputError(f"Unknown focus rule {rule!r}; expected one of {', '.join(FOCUS_RULES)}.")
    if base < 0 or boost < 0:
        raise InputError(f"base={base} and boost={boost}; expected non-negative weights.")
    if old_logits is None and rule in ("old_correct", "neg_flip"):
        raise InputError(
            f"The focus rule {rule!r} needs the old model's logits to know where it was right; "
            "none were given."
        )
    check_logits(new_logits, old_logits)
    check_labels(labels, new_logits)
    new = ops.stop_gradient(as_float(new_logits))
    if rule == "all":
        indicator = ops.zeros_like(new[:, 0])
    else:
        new_ok = correct(new, labels)
        if rule == "new_incorrect":
            marked = ops.logical_not(new_ok)
        else:
            old_ok = correct(old_logits, labels)
            marked = (
                old_ok
                if rule == "old_correct"
                else ops.logical_and(old_ok, ops.logical_not(new_ok))
            )
        indicator = ops.cast(marked, new.dtype)
    weights = base + boost * indicator
    if sample_weights is not None:
        size = static_shape(new)[0]
        shape = static_shape(sample_weights)
        if len(shape) != 1 or (size is not None and shape[0] is not None and shape[0] != size):
            raise MismatchError(
                f"sample_weights has shape {shape}; expected ({size},), one weight per sample."
            )
        weights = weights * ops.cast(sample_weights, new.dtype)
    return ops.stop_gradient(weights)
