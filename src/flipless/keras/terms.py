"""Per-sample compatibility terms in ``keras.ops``: (new logits, old logits, labels) → loss [N].

The same formulas, options and defaults as :mod:`flipless.losses.terms` (METHODS.md §2), so
that they run on every Keras 3 backend. z_n, z_o ∈ R^C are the new and the old model's
logits of a sample, p^T(z) = softmax(z / T). The old logits are passed through
``stop_gradient``: the old model never receives gradients. ``class_mask`` (bool [C])
restricts a term to the classes the old model knows; the softmax is then taken over those
classes only (the other logits are replaced by −10⁹, whose probability is exactly 0).

* :func:`kl_divergence` (focal distillation, FD-KL; Yan et al., CVPR 2021):
  ℓ = T² · Σ_k p^T_k(z_o) [log p^T_k(z_o) − log p^T_k(z_n)], from log-softmax.
* :func:`logit_matching` (FD-LM): ℓ = ½ · mean_k (z_n,k − z_o,k)².
* :func:`logit_difference_inhibition` (LDI, ELODI; Zhao et al., 2022):
  ℓ = (1/|K|) Σ_{k∈K} max(|z_n,k − z_o,k| − ξ, 0)^p over a per-sample class set K.
* :func:`strict_imitation`: ℓ = −Σ_k p^T_k(z_o) log p^T_k(z_n) (soft cross-entropy).
* :func:`new_error`: ℓ = CE(z_n, y), BackwardCompatibilityML's "dissonance".

Sigmoid (multi-label) terms are not provided here; use :mod:`flipless.losses` for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from flipless.errors import InputError, MismatchError

#: The logit given to classes outside ``class_mask``: finite (so gradients stay finite)
#: and low enough that its softmax probability underflows to exactly 0.
_MASKED_LOGIT = -1e9
_LOW_PRECISION = ("float16", "bfloat16")

Tensor = Any  # a backend tensor or a NumPy array


def as_float(values: Tensor) -> Tensor:
    """A float tensor of at least 32 bits (float16/bfloat16 outputs are computed in float32)."""
    values = ops.convert_to_tensor(values)
    dtype = str(ops.dtype(values))
    if dtype in _LOW_PRECISION or "float" not in dtype:
        return ops.cast(values, "float32")
    return values


def as_labels(labels: Tensor) -> Tensor:
    """Class indices as int32 [N]."""
    return ops.cast(ops.convert_to_tensor(labels), "int32")


def batch_mean(values: Tensor) -> Tensor:
    """(1/N) Σ_i values_i in the dtype of ``values``.

    ``keras.ops.mean`` on the torch backend computes float64 inputs in float32; a sum does not.
    """
    return ops.sum(values) / ops.cast(ops.shape(values)[0], values.dtype)


def static_shape(values: Tensor) -> tuple[int | None, ...]:
    """The shape known when the step is traced (None for a size known only at run time)."""
    shape = values.shape if hasattr(values, "shape") else np.shape(values)  # lists too
    return tuple(None if size is None else int(size) for size in shape)


def _same(left: tuple[int | None, ...], right: tuple[int | None, ...]) -> bool:
    """Whether two static shapes agree where both sizes are known."""
    return len(left) == len(right) and all(
        a is None or b is None or a == b for a, b in zip(left, right, strict=True)
    )


def check_logits(new_logits: Tensor, old_logits: Tensor | None = None) -> None:
    """New logits are [N, C]; old logits, when given, have the same shape."""
    new_shape = static_shape(new_logits)
    if len(new_shape) != 2:
        raise InputError(
            f"new logits have shape {new_shape}; expected [N, C] scores (one row per sample)."
        )
    if old_logits is not None and not _same(new_shape, static_shape(old_logits)):
        raise MismatchError(
            f"new logits {new_shape} and old logits {static_shape(old_logits)} differ; expected the "
            "same [N, C] (place an old model with fewer classes into the new label space and "
            "pass class_mask)."
        )


def check_labels(labels: Tensor, new_logits: Tensor) -> None:
    """Labels are class indices [N], one per row of the logits."""
    shape, rows = static_shape(labels), static_shape(new_logits)[0]
    if len(shape) != 1 or not _same(shape, (rows,)):
        raise MismatchError(
            f"labels have shape {shape} for logits of {rows} rows; expected class indices of "
            f"shape ({rows},) (convert one-hot labels with argmax over the classes)."
        )


def class_mask_row(class_mask: Tensor, classes: int | None) -> Tensor:
    """A checked bool class mask [C] as a row [1, C] that broadcasts over the batch."""
    shape = static_shape(class_mask)
    dtype = str(ops.dtype(ops.convert_to_tensor(class_mask)))
    if dtype != "bool" or not _same(shape, (classes,)):
        raise MismatchError(
            f"class_mask must be a bool array of shape ({classes},); got {dtype} {shape}."
        )
    return ops.reshape(ops.convert_to_tensor(class_mask), (1, -1))


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise InputError(f"temperature={temperature}; expected a positive number.")


def _scaled(
    new_logits: Tensor, old_logits: Tensor, temperature: float, class_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """z_n / T and z_o / T (old without gradient), unknown classes set to −10⁹."""
    check_logits(new_logits, old_logits)
    new = as_float(new_logits) / temperature
    old = ops.stop_gradient(ops.cast(old_logits, new.dtype)) / temperature
    if class_mask is not None:
        known = class_mask_row(class_mask, static_shape(new_logits)[1])
        masked = ops.full_like(new, _MASKED_LOGIT)
        new, old = ops.where(known, new, masked), ops.where(known, old, masked)
    return new, old


def kl_divergence(
    new_logits: Tensor,
    old_logits: Tensor,
    temperature: float = 1.0,
    class_mask: Tensor | None = None,
) -> Tensor:
    """T² · KL(p^T(z_o) ‖ p^T(z_n)) per sample."""
    _check_temperature(temperature)
    new, old = _scaled(new_logits, old_logits, temperature, class_mask)
    log_new = ops.log_softmax(new, axis=1)
    log_old = ops.log_softmax(old, axis=1)
    return temperature**2 * ops.sum(ops.exp(log_old) * (log_old - log_new), axis=1)


def logit_matching(
    new_logits: Tensor,
    old_logits: Tensor,
    class_mask: Tensor | None = None,
) -> Tensor:
    """½ · mean_k (z_n,k − z_o,k)² per sample (over the known classes with ``class_mask``)."""
    check_logits(new_logits, old_logits)
    new = as_float(new_logits)
    squared = ops.square(new - ops.stop_gradient(ops.cast(old_logits, new.dtype)))
    if class_mask is None:
        return 0.5 * ops.sum(squared, axis=1) / ops.cast(ops.shape(squared)[1], new.dtype)
    known = ops.cast(class_mask_row(class_mask, static_shape(new_logits)[1]), new.dtype)
    return 0.5 * ops.sum(squared * known, axis=1) / ops.sum(known)


def ldi_class_set(
    new_logits: Tensor,
    old_logits: Tensor,
    labels: Tensor,
    top_k: int | None = None,
    top_k_by: str = "new",
    exclude_gt: bool = False,
) -> Tensor:
    """The per-sample class set K of LDI as a bool mask [N, C].

    All classes, or the top-k classes of each sample ranked by the new logits, the old
    model's (``"teacher"``, the name used by :mod:`flipless.losses`), or ``"both"`` (the
    union); ``exclude_gt`` removes the true class.
    """
    check_logits(new_logits, old_logits)
    classes = static_shape(new_logits)[1]
    if top_k is None:
        members = ops.ones_like(new_logits, dtype="bool")
    else:
        if classes is not None and not 1 <= top_k <= classes:
            raise InputError(f"top_k={top_k}; expected 1 ≤ top_k ≤ {classes} classes.")
        rankers = {
            "new": [new_logits],
            "teacher": [old_logits],
            "both": [new_logits, old_logits],
        }
        if top_k_by not in rankers:
            raise InputError(f"top_k_by={top_k_by!r}; expected 'new', 'teacher' or 'both'.")
        members = ops.zeros_like(new_logits, dtype="bool")
        for ranker in rankers[top_k_by]:
            _, top = ops.top_k(ops.stop_gradient(as_float(ranker)), top_k)  # per row
            chosen = ops.max(ops.one_hot(top, classes, dtype="int32"), axis=1)  # [N, C]
            members = ops.logical_or(members, ops.cast(chosen, "bool"))
    if exclude_gt:
        truth = ops.cast(ops.one_hot(as_labels(labels), classes, dtype="int32"), "bool")
        members = ops.logical_and(members, ops.logical_not(truth))
    return members


def logit_difference_inhibition(
    new_logits: Tensor,
    old_logits: Tensor,
    labels: Tensor,
    power: float = 2.0,
    margin: float = 0.5,
    top_k: int | None = None,
    top_k_by: str = "new",
    exclude_gt: bool = False,
    one_sided: bool = False,
    class_mask: Tensor | None = None,
) -> Tensor:
    """(1/|K|) Σ_{k∈K} max(d_k − ξ, 0)^p per sample (0 where K is empty).

    d_k = |z_n,k − z_o,k|; with ``one_sided`` only changes towards a flip count: a rise of a
    wrong class (z_n,k − z_o,k for k ≠ y) or a fall of the true class (z_o,y − z_n,y).
    """
    check_logits(new_logits, old_logits)
    check_labels(labels, new_logits)
    if power <= 0 or margin < 0:
        raise InputError(f"power={power}, margin={margin}; expected power > 0 and margin ≥ 0.")
    members = ldi_class_set(new_logits, old_logits, labels, top_k, top_k_by, exclude_gt)
    if class_mask is not None:
        members = ops.logical_and(members, class_mask_row(class_mask, static_shape(new_logits)[1]))
    new = as_float(new_logits)
    difference = new - ops.stop_gradient(ops.cast(old_logits, new.dtype))
    if one_sided:
        truth = ops.one_hot(as_labels(labels), static_shape(new_logits)[1], dtype=new.dtype)
        change = ops.relu((1.0 - 2.0 * truth) * difference)
    else:
        change = ops.abs(difference)
    weight = ops.cast(members, new.dtype)
    penalty = ops.power(ops.relu(change - margin), power) * weight
    size = ops.sum(weight, axis=1)
    return ops.sum(penalty, axis=1) / ops.where(size > 0, size, ops.ones_like(size))


def strict_imitation(
    new_logits: Tensor,
    old_logits: Tensor,
    temperature: float = 1.0,
    class_mask: Tensor | None = None,
) -> Tensor:
    """Soft cross-entropy −Σ_k p^T_k(z_o) log p^T_k(z_n) per sample."""
    _check_temperature(temperature)
    new, old = _scaled(new_logits, old_logits, temperature, class_mask)
    return -ops.sum(ops.softmax(old, axis=1) * ops.log_softmax(new, axis=1), axis=1)


def new_error(new_logits: Tensor, labels: Tensor) -> Tensor:
    """CE(z_n, y) = −log softmax(z_n)_y per sample."""
    check_logits(new_logits)
    check_labels(labels, new_logits)
    new = as_float(new_logits)
    truth = ops.one_hot(as_labels(labels), static_shape(new_logits)[1], dtype=new.dtype)
    return -ops.sum(truth * ops.log_softmax(new, axis=1), axis=1)
