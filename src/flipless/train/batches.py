"""Batches for the loop: the seeded order of an epoch and dict batches from a data set.

An epoch's order depends only on the seed and the epoch number, which is what lets a resumed
run skip exactly the steps already done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from flipless.data.labeled import LabeledData
from flipless.errors import InputError


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of the sample positions that depends only on ``seed`` and ``epoch``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def fetch(data: Dataset, positions: torch.Tensor) -> dict[str, Any]:
    """The samples at ``positions`` as one dict batch (LabeledData: by indexing, no copies
    per sample; other data sets: their items collated)."""
    if isinstance(data, LabeledData):
        if isinstance(data.inputs, torch.Tensor):
            inputs: Any = data.inputs[positions]
        else:
            inputs = [data.inputs[i] for i in positions.tolist()]
        return {"inputs": inputs, "labels": data.labels[positions], "ids": data.ids[positions]}
    return default_collate([data[i] for i in positions.tolist()])


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, e.g. tokenized text) on ``device``; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


def check_dataset(data: Any, name: str) -> None:
    """Raise unless ``data`` is a non-empty sized Dataset."""
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise InputError(
            f"{name} must be a sized torch Dataset whose items are dicts with 'inputs', "
            f"'labels' and 'ids' (flipless.train.LabeledData is one); got {type(data).__name__}."
        )
    if len(data) == 0:
        raise InputError(f"{name} is empty.")


def labels_of(data: Dataset) -> np.ndarray:
    """The labels of a data set that is not a LabeledData, item by item."""
    return np.asarray([int(data[i]["labels"]) for i in range(len(data))])
