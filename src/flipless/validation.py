"""Input checks shared by every public function.

Arrays arrive as numpy arrays, torch tensors (CPU or CUDA), pandas series or plain lists;
they leave as numpy arrays of a known dtype, or a :class:`~flipless.errors.InputError`
explains what was wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flipless.errors import InputError, MismatchError

#: How many offending positions or ids an error message lists before "…".
SHOWN_IN_ERRORS = 5


def first_few(values: Sequence[Any] | np.ndarray, limit: int = SHOWN_IN_ERRORS) -> str:
    """Format the first ``limit`` values for an error message, with an ellipsis when cut."""
    values = list(values[: limit + 1])
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:limit])
    return shown + (", …" if len(values) > limit else "")


def to_numpy(values: Any, name: str) -> np.ndarray:
    """Turn a list, numpy array, pandas series or torch tensor (any device) into a numpy array."""
    if values is None:
        raise InputError(f"{name} is None; expected an array of predictions or labels.")
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, on any device
        tensor = values.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:  # bfloat16 / float16
            tensor = tensor.float()
        return tensor.numpy()
    if hasattr(values, "to_numpy"):  # pandas Series / DataFrame
        return values.to_numpy()
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:
        raise InputError(
            f"{name} could not be read as an array ({error}); expected a list, numpy array or "
            "torch tensor of equal-length rows."
        ) from error
    if array.dtype == object:
        raise InputError(
            f"{name} holds Python objects (ragged rows or mixed types); expected integer class "
            "indices of shape [N] or scores of shape [N, C]."
        )
    return array


def to_group_labels(values: Any, name: str) -> np.ndarray:
    """A 1-D array of any hashable labels (ids, slice groups): strings and mixed types allowed."""
    if hasattr(values, "detach") or hasattr(values, "to_numpy"):
        array = to_numpy(values, name)
    else:
        array = np.asarray(values, dtype=object if isinstance(values, (list, tuple)) else None)
    if array.ndim != 1:
        raise InputError(f"{name} has shape {tuple(array.shape)}; expected one value per sample.")
    return array


def check_nonempty(array: np.ndarray, name: str) -> None:
    """Raise when ``array`` has no rows."""
    if array.shape[0] == 0:
        raise InputError(f"{name} is empty; expected at least one sample.")


def index_array(values: Any, name: str) -> tuple[np.ndarray, int]:
    """Return ``values`` as a 1-D int64 array of class indices ≥ 0, and its largest value.

    Integer-valued floats (``2.0``) are accepted; fractions, NaN and negatives are errors
    that name the first offending positions. The range is checked in one parallel reduction
    (the maximum read as unsigned, where a negative value shows up as a huge one).
    """
    array = to_numpy(values, name)
    if array.ndim != 1:
        raise InputError(
            f"{name} has shape {tuple(array.shape)}; expected a 1-D array of class indices "
            "(use argmax over the last axis to turn scores into labels)."
        )
    check_nonempty(array, name)
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            positions = np.flatnonzero(bad)
            raise InputError(
                f"{name} holds {positions.size} non-integer value(s) (positions "
                f"{first_few(positions)}: {first_few(array[positions])}); expected integer "
                "class indices. Pass labels, or scores of shape [N, C] to take the argmax."
            )
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"{name} has dtype {array.dtype}; expected integer class indices. Map class names "
            "to indices first (flipless.io does this for files)."
        )
    array = array.astype(np.int64, copy=False)
    import numba

    from flipless.kernels import largest_unsigned

    largest = int(largest_unsigned(array, numba.get_num_threads()))
    if largest > np.iinfo(np.int64).max:
        negative = np.flatnonzero(array < 0)
        raise InputError(
            f"{name} holds {negative.size} negative value(s) (positions {first_few(negative)}: "
            f"{first_few(array[negative])}); expected class indices ≥ 0. Drop ignored samples "
            "(for example label -100) before comparing."
        )
    return array, largest


def check_index_range(
    array: np.ndarray,
    largest: int,
    name: str,
    num_classes: int,
    classes_from: str = "num_classes",
) -> None:
    """Raise when an index array (with maximum ``largest``) reaches ``num_classes``.

    ``classes_from`` names where the number of classes came from, for the message.
    """
    if largest >= num_classes:
        too_large = np.flatnonzero(array >= num_classes)
        raise InputError(
            f"{name} holds {too_large.size} value(s) ≥ {num_classes} (positions "
            f"{first_few(too_large)}: {first_few(array[too_large])}); expected indices in "
            f"[0, {num_classes}), as {classes_from} gives {num_classes} classes. Check the "
            "indices, or the number of classes."
        )


def check_scores(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a finite 2-D float array of shape [N, C] with C ≥ 2."""
    array = to_numpy(values, name)
    if array.ndim != 2:
        raise InputError(f"{name} has shape {tuple(array.shape)}; expected scores of shape [N, C].")
    check_nonempty(array, name)
    if array.shape[1] < 2:
        raise InputError(
            f"{name} has {array.shape[1]} column; expected one score per class (C ≥ 2). For a "
            "single sigmoid output z, pass the columns [-z, z] or the thresholded labels."
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise InputError(
            f"{name} has NaN or infinite scores in {rows.size} row(s) (rows {first_few(rows)}); "
            "expected finite logits or probabilities. Check the model's outputs for overflow."
        )
    return array


def check_same_length(name_to_length: dict[str, int]) -> int:
    """Return the common length, or raise a :class:`MismatchError` listing each length."""
    lengths = set(name_to_length.values())
    if len(lengths) > 1:
        listed = ", ".join(f"{name} has {length}" for name, length in name_to_length.items())
        raise MismatchError(
            f"Inputs have different lengths ({listed}); expected one row per sample in each. "
            "Join files by sample id (flipless.io.join_by_id) rather than by position."
        )
    return lengths.pop()


def check_num_classes(num_classes: int, where: str) -> int:
    """Raise unless ``num_classes`` ≥ 2: flips need at least two classes."""
    if int(num_classes) != num_classes or num_classes < 2:
        raise InputError(
            f"{where} describes a {num_classes}-class problem; flip metrics need at least 2 "
            "classes. Pass num_classes explicitly when a small sample shows only one class."
        )
    return int(num_classes)


def check_probability(value: float, name: str) -> float:
    """Raise unless 0 < ``value`` < 1 (a confidence level or significance level)."""
    if not 0.0 < float(value) < 1.0:
        raise InputError(f"{name}={value!r}; expected a number strictly between 0 and 1.")
    return float(value)
