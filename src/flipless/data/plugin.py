"""``[data] target = "package.module:function"``: splits from a user's own function.

The function is called with the config's ``args`` as keyword arguments and must return a
mapping of split name → a :class:`~flipless.data.labeled.LabeledData`, or an ``(inputs,
labels)`` / ``(inputs, labels, ids)`` tuple (inputs: a numeric array or a list of texts;
labels: class indices, or class names). "val" and "dev" mean "validation". Tuple splits
without ids are numbered after the largest id of the splits before them; class names are
``classes`` when given, else those of the LabeledData splits, else taken from the labels
(sorted names, or "0".."K-1" for indices).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flipless.data.columns import Splits
from flipless.data.labeled import LabeledData, to_int64_array
from flipless.data.table import split_name
from flipless.errors import FliplessError, InputError, MismatchError
from flipless.targets import resolve_target
from flipless.validation import first_few


def load_target(
    target: str, args: Mapping[str, Any] | None = None, classes: Sequence[str] | None = None
) -> Splits:
    """The splits ``target(**args)`` returns, checked and converted (module docstring)."""
    function = resolve_target(target, key="data.target")
    if not callable(function):
        raise InputError(
            f"data.target {target!r} is a {type(function).__name__}, not a function; expected "
            "a callable that returns the splits."
        )
    try:
        returned = function(**dict(args or {}))
    except FliplessError:
        raise
    except Exception as error:  # the user's code: report it without a traceback
        raise InputError(
            f"data.target {target!r} raised {type(error).__name__}: {error} (called with "
            f"data.args {dict(args or {})!r}); fix the function or its arguments."
        ) from error
    return splits_from_returned(returned, target, classes)


def splits_from_returned(
    returned: Any, target: str, classes: Sequence[str] | None = None
) -> Splits:
    """Check and convert what a data target returned."""
    where = f"data.target {target!r}"
    if not isinstance(returned, Mapping) or not returned:
        raise InputError(
            f"{where} returned {type(returned).__name__}; expected a non-empty dict of split "
            "name → LabeledData or (inputs, labels[, ids]), e.g. {'train': (x, y), 'test': "
            "(x_test, y_test)}."
        )
    named: dict[str, Any] = {}
    for key, value in returned.items():
        if not isinstance(key, str):
            raise InputError(f"{where} returned a split named {key!r}; expected string names.")
        name = split_name(key)
        if name in named:
            raise InputError(
                f"{where} returned more than one validation split ({key!r} and another of "
                "validation / val / dev); expected one."
            )
        if not isinstance(value, LabeledData) and not (
            isinstance(value, (tuple, list)) and len(value) in (2, 3)
        ):
            raise InputError(
                f"{where}: split {key!r} is {type(value).__name__}; expected a LabeledData or "
                "an (inputs, labels) / (inputs, labels, ids) tuple."
            )
        named[name] = value
    class_names = _class_names(named, where, classes)
    index_of = {name: index for index, name in enumerate(class_names)}
    result: dict[str, LabeledData] = {}
    next_id = 0
    for name, value in named.items():
        if isinstance(value, LabeledData):
            data = value
        else:
            inputs, labels, *ids = value
            data = LabeledData.from_arrays(
                inputs,
                _label_indices(labels, index_of, f"{where}: split {name!r}"),
                ids[0] if ids else np.arange(next_id, next_id + len(labels)),
                class_names=class_names,
                name=f"{target}/{name}",
            )
        if data.class_names != class_names:
            raise MismatchError(
                f"{where}: split {name!r} has classes {first_few(list(data.class_names), 10)}, "
                f"expected {first_few(list(class_names), 10)}; return one label space in "
                "every split."
            )
        if len(data) == 0:
            raise InputError(f"{where}: split {name!r} is empty; expected at least one sample.")
        next_id = max(next_id, int(data.ids.max()) + 1)
        result[name] = data
    return Splits(result)


def _class_names(
    named: Mapping[str, Any], where: str, classes: Sequence[str] | None
) -> tuple[str, ...]:
    if classes is not None:
        return tuple(str(name) for name in classes)
    for value in named.values():
        if isinstance(value, LabeledData):
            return value.class_names
    labels = [np.asarray(value[1]) for value in named.values()]
    if any(array.dtype.kind in "UO" for array in labels):
        return tuple(sorted({str(label) for array in labels for label in array.tolist()}))
    largest = max((int(array.max()) for array in labels if array.size), default=-1)
    if largest < 0:
        raise InputError(f"{where}: no labels to take the classes from; set data.classes.")
    return tuple(str(k) for k in range(largest + 1))


def _label_indices(labels: Any, index_of: Mapping[str, int], where: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype.kind not in "UO":
        return to_int64_array(labels, f"{where}: labels")
    unknown = sorted({str(label) for label in array.tolist()} - set(index_of))
    if unknown:
        raise InputError(
            f"{where}: labels {first_few(unknown)} are not classes ({first_few(list(index_of), 10)}); "
            "add them to data.classes or fix the labels."
        )
    return np.asarray([index_of[str(label)] for label in array.tolist()], dtype=np.int64)
