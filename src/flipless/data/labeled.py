"""The labelled data set every loader returns, and its seeded stratified split.

A :class:`LabeledData` holds one split: inputs (a float32 tensor ``[N, ...]`` for images and
tables, or a list of N strings for texts), int64 labels ``[N]``, unique int64 sample ids
``[N]`` (they key cached teacher logits and join old and new predictions), the class names
and a name. Indexing gives ``{"inputs", "labels", "ids"}`` so that torch's default collate
makes a dict batch (a list of strings for texts).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from flipless.errors import InputError
from flipless.validation import first_few, to_numpy

Inputs = torch.Tensor | list[str]


@dataclass(frozen=True, eq=False, repr=False)
class LabeledData(Dataset):
    """One split of a labelled data set; checked on construction.

    Attributes:
        inputs: a floating tensor [N, ...] (float32 usually), or a list of N strings (texts).
        labels: int64 tensor [N], each in [0, len(class_names)).
        ids: int64 tensor [N], unique within the split.
        class_names: one name per class, in index order, unique.
        name: what the split is, for messages and records ("digits/train").

    Use :meth:`from_arrays` to build one from numpy arrays, tensors or lists.
    """

    inputs: Inputs
    labels: torch.Tensor
    ids: torch.Tensor
    class_names: tuple[str, ...]
    name: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InputError(f"name is {type(self.name).__name__}; expected a string.")
        where = f"LabeledData {self.name!r}"
        size = _check_inputs(self.inputs, where)
        for field, values in (("labels", self.labels), ("ids", self.ids)):
            if not isinstance(values, torch.Tensor) or values.dtype != torch.int64:
                kind = values.dtype if isinstance(values, torch.Tensor) else type(values).__name__
                raise InputError(
                    f"{where}: {field} is {kind}; expected an int64 tensor [N]. Build the data "
                    "with LabeledData.from_arrays, which converts arrays and lists."
                )
            if values.shape != (size,):
                raise InputError(
                    f"{where}: {field} has shape {tuple(values.shape)}; expected ({size},), one "
                    f"per input ({size} inputs)."
                )
        tensors = {"labels": self.labels, "ids": self.ids}
        if isinstance(self.inputs, torch.Tensor):
            tensors["inputs"] = self.inputs
        elsewhere = [
            f"{field} on {t.device}" for field, t in tensors.items() if t.device.type != "cpu"
        ]
        if elsewhere:
            raise InputError(
                f"{where}: {', '.join(elsewhere)}; expected CPU tensors. Keep data sets on the "
                "CPU and move each batch to the device in the training loop."
            )
        _check_class_names(self.class_names, where)
        _check_label_range(self.labels, len(self.class_names), where)
        _check_unique_ids(self.ids, where)

    @classmethod
    def from_arrays(
        cls,
        inputs: Any,
        labels: Any,
        ids: Any = None,
        class_names: Sequence[str] | None = None,
        name: str = "arrays",
    ) -> LabeledData:
        """Build a split from numpy arrays, torch tensors or lists.

        ``inputs``: a list / tuple / numpy array of strings (or an empty list) stays a list of
        strings; anything numeric becomes a float32 tensor with its values unchanged (no
        scaling). ``labels``:
        integer class indices (integer-valued floats accepted). ``ids`` default to 0..N-1.
        ``class_names`` default to "0".."K-1" with K = largest label + 1.
        """
        inputs = _as_inputs(inputs, name)
        label_array = to_int64_array(labels, f"{name}: labels")
        if ids is None:
            id_array = np.arange(label_array.shape[0], dtype=np.int64)
        else:
            id_array = to_int64_array(ids, f"{name}: ids")
        if class_names is None:
            if label_array.size == 0:
                raise InputError(f"{name}: no labels to infer the classes from; pass class_names.")
            class_names = tuple(str(k) for k in range(int(label_array.max()) + 1))
        return cls(
            inputs=inputs,
            labels=torch.from_numpy(label_array),
            ids=torch.from_numpy(id_array),
            class_names=tuple(class_names),
            name=name,
        )

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)`` (some may have no samples here)."""
        return len(self.class_names)

    @property
    def is_text(self) -> bool:
        """True when the inputs are strings."""
        return isinstance(self.inputs, list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"inputs": inputs[index], "labels": labels[index], "ids": ids[index]}``."""
        return {
            "inputs": self.inputs[index],
            "labels": self.labels[index],
            "ids": self.ids[index],
        }

    def subset(self, indices: Any, name: str | None = None) -> LabeledData:
        """The samples at integer positions ``indices`` (negative count from the end), in that
        order, each at most once; the name is kept unless ``name`` is given."""
        positions = to_int64_array(indices, f"{self.name}: subset indices")
        outside = (positions < -len(self)) | (positions >= len(self))
        if outside.any():
            bad = positions[outside]
            raise InputError(
                f"{self.name}: subset indices {first_few(bad)} are outside [0, {len(self)}); "
                "expected positions of samples in this split (not sample ids)."
            )
        positions = np.where(positions < 0, positions + len(self), positions)
        ordered = np.sort(positions)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if repeated.size:
            raise InputError(
                f"{self.name}: subset indices repeat positions {first_few(repeated)}; expected "
                "each sample at most once, as sample ids must stay unique."
            )
        index = torch.from_numpy(positions)
        if isinstance(self.inputs, list):
            inputs: Inputs = [self.inputs[i] for i in positions.tolist()]
        else:
            inputs = self.inputs[index]
        return LabeledData(
            inputs=inputs,
            labels=self.labels[index],
            ids=self.ids[index],
            class_names=self.class_names,
            name=self.name if name is None else name,
        )

    def class_counts(self) -> torch.Tensor:
        """int64 [num_classes]: how many samples of each class this split holds."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        kind = "texts" if self.is_text else f"inputs {tuple(self.inputs.shape[1:])}"
        return (
            f"LabeledData({self.name!r}, {len(self)} samples, {kind}, {self.num_classes} classes)"
        )


def stratified_split(
    data: LabeledData, fraction: float, seed: int
) -> tuple[LabeledData, LabeledData]:
    """Split ``data`` into ``(part, rest)`` with about ``fraction`` of each class in ``part``.

    For each class c with n_c samples, ``part`` takes k_c = ⌊fraction · n_c + ½⌋ of them
    (rounded half up), then, when fraction < 1 and n_c ≥ 2, k_c is clamped to [1, n_c − 1]
    so that the class appears in both parts. A class with one sample goes to ``part`` when
    fraction ≥ ½, else to ``rest``; with fraction = 1 ``rest`` is empty. Which samples of a
    class are taken: the first k_c of a permutation of that class's positions, drawn from
    ``numpy.random.default_rng(seed)`` one class after another in ascending class order. Both
    parts keep the original sample order, so the same data and seed give the same ids.
    """
    fraction = check_fraction(fraction, "fraction")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed is {seed!r}; expected an integer.")
    rng = np.random.default_rng(int(seed))
    labels = data.labels.numpy()
    taken = np.zeros(len(data), dtype=bool)
    for label in range(data.num_classes):
        positions = np.flatnonzero(labels == label)
        count = positions.size
        if count == 0:
            continue
        take = math.floor(fraction * count + 0.5)
        if fraction < 1.0 and count >= 2:
            take = min(max(take, 1), count - 1)
        taken[rng.permutation(positions)[:take]] = True
    return data.subset(np.flatnonzero(taken)), data.subset(np.flatnonzero(~taken))


def check_fraction(value: Any, name: str, allow_one: bool = True) -> float:
    """Return ``value`` as a float in (0, 1] (or (0, 1) when ``allow_one`` is False)."""
    upper = "1]" if allow_one else "1)"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name}={value!r}; expected a number in (0, {upper}.")
    number = float(value)
    if not (0.0 < number < 1.0 or (allow_one and number == 1.0)):
        raise InputError(f"{name}={value!r}; expected a number in (0, {upper}.")
    return number


def _check_inputs(inputs: Any, where: str) -> int:
    """Return the number of samples in ``inputs``, or raise when their type is wrong."""
    if isinstance(inputs, list):
        not_text = [i for i, text in enumerate(inputs) if not isinstance(text, str)]
        if not_text:
            raise InputError(
                f"{where}: inputs is a list with non-string items at positions "
                f"{first_few(not_text)}; expected a list of texts, or a float32 tensor [N, ...]."
            )
        return len(inputs)
    if not isinstance(inputs, torch.Tensor):
        raise InputError(
            f"{where}: inputs is {type(inputs).__name__}; expected a float32 tensor [N, ...] or "
            "a list of strings. Build the data with LabeledData.from_arrays to convert."
        )
    if not inputs.is_floating_point() or inputs.ndim < 1:
        raise InputError(
            f"{where}: inputs is a {inputs.dtype} tensor of shape {tuple(inputs.shape)}; "
            "expected a floating tensor [N, ...] (float32 usually, float64 for exact checks). "
            "Convert with .float() (images scaled to [0, 1])."
        )
    return int(inputs.shape[0])


def _check_class_names(class_names: Any, where: str) -> None:
    if not isinstance(class_names, tuple) or not all(isinstance(c, str) for c in class_names):
        raise InputError(f"{where}: class_names is {class_names!r}; expected a tuple of strings.")
    if not class_names:
        raise InputError(f"{where}: class_names is empty; expected at least one class.")
    repeated = [name for name, count in Counter(class_names).items() if count > 1]
    if repeated:
        raise InputError(
            f"{where}: class_names repeats {first_few(repeated)}; expected one name per class."
        )


def _check_label_range(labels: torch.Tensor, num_classes: int, where: str) -> None:
    outside = (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        positions = torch.nonzero(outside).flatten().numpy()
        raise InputError(
            f"{where}: labels at positions {first_few(positions)} are "
            f"{first_few(labels.numpy()[positions])}; expected class indices in "
            f"[0, {num_classes}) ({num_classes} class names). Pass all class names."
        )


def _check_unique_ids(ids: torch.Tensor, where: str) -> None:
    values = ids.numpy()
    if values.size < 2 or bool((values[1:] > values[:-1]).all()):  # increasing: unique
        return
    ordered = np.sort(values)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated.size:
        raise InputError(
            f"{where}: {repeated.size} id(s) appear more than once ({first_few(repeated)}); "
            "expected a unique id per sample. Leave ids out to number the samples 0..N-1."
        )


def _as_inputs(inputs: Any, name: str) -> Inputs:
    """Texts stay a list of str; anything numeric becomes a float32 tensor (values unchanged)."""
    if isinstance(inputs, (list, tuple)) and (not inputs or isinstance(inputs[0], str)):
        return list(inputs)  # an empty list stays a list: no texts
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "UO":
        return inputs.tolist()  # strings; any non-string item is refused by LabeledData
    array = to_numpy(inputs, f"{name}: inputs")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(
            f"{name}: inputs have dtype {array.dtype}; expected numbers or a list of strings."
        )
    if array.ndim == 0:
        raise InputError(f"{name}: inputs is a scalar; expected one row per sample.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def to_int64_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; integer-valued floats accepted, fractions, NaN and
    booleans refused (``name`` says what the values are, for the message)."""
    array = to_numpy(values, name)
    if array.ndim != 1:
        raise InputError(f"{name} has shape {tuple(array.shape)}; expected a 1-D array.")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            positions = np.flatnonzero(bad)
            raise InputError(
                f"{name} holds non-integer values at positions {first_few(positions)} "
                f"({first_few(array[positions])}); expected integers."
            )
    elif array.dtype == np.bool_:
        raise InputError(
            f"{name} is boolean; expected integers (turn a mask into positions with "
            "numpy.flatnonzero(mask))."
        )
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} has dtype {array.dtype}; expected integers.")
    return array.astype(np.int64)
