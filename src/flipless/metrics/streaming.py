"""A streaming, DDP-safe accumulator of flip counts (a ``torchmetrics.Metric``).

Its state is the [K, 8] outcome table, the [K, K] flip matrix and, optionally, one [G, 8]
table per slice: all counts, all reduced by summation across processes
(``dist_reduce_fx="sum"``). Because every rate is derived from counts at the end, the result
equals :func:`flipless.compare` on the concatenated data, however the data is split into
batches or across ranks. Outcome codes are those of :mod:`flipless.metrics.outcomes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from flipless.errors import InputError, MismatchError
from flipless.metrics.comparison import Comparison, SliceTable
from flipless.metrics.outcomes import NUM_OUTCOMES
from flipless.validation import check_num_classes


class FlipMetric(Metric):
    """Accumulate old/new outcomes batch by batch; :meth:`compute` returns a :class:`Comparison`.

    Args:
        num_classes: K.
        top_k: count a model correct when the true class is among its top k scores.
        class_names: optional names of the K classes.
        slices: optional ``{name: number_of_groups}``; :meth:`update` then takes group indices.
        validate_args: check each batch (costs a device sync per batch on GPU).

    Example::

        metric = FlipMetric(num_classes=10)
        for x, y in loader:
            metric.update(old_model(x), new_model(x), y)
        comparison = metric.compute()   # synced across processes under DDP
        comparison.negative_flip_rate
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        top_k: int = 1,
        class_names: Sequence[str] | None = None,
        slices: Mapping[str, int] | None = None,
        validate_args: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_num_classes(num_classes, f"num_classes={num_classes}")
        if int(top_k) != top_k or not 1 <= top_k < self.num_classes:
            raise InputError(
                f"top_k={top_k!r}; expected an integer from 1 to {self.num_classes - 1}."
            )
        if class_names is not None and len(class_names) != self.num_classes:
            raise MismatchError(
                f"{len(class_names)} class names for num_classes={self.num_classes}; expected one per class."
            )
        self.top_k = int(top_k)
        self.class_names = tuple(str(n) for n in class_names) if class_names is not None else None
        self.slice_sizes = {str(name): int(size) for name, size in (slices or {}).items()}
        self.validate_args = validate_args
        k = self.num_classes
        self.add_state(
            "class_outcomes", torch.zeros(k, NUM_OUTCOMES, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("flip_matrix", torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")
        for name, size in self.slice_sizes.items():
            if size < 1:
                raise InputError(f"Slice {name!r} has {size} groups; expected at least one.")
            self.add_state(
                _slice_state(name),
                torch.zeros(size, NUM_OUTCOMES, dtype=torch.long),
                dist_reduce_fx="sum",
            )

    def _prediction_and_correctness(
        self, outputs: torch.Tensor, target: torch.Tensor, name: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if outputs.ndim == 2:
            if self.validate_args:
                if outputs.shape[1] != self.num_classes:
                    raise MismatchError(
                        f"The {name} scores have {outputs.shape[1]} columns; expected num_classes="
                        f"{self.num_classes}."
                    )
                if not torch.isfinite(outputs).all():
                    raise InputError(
                        f"The {name} scores contain NaN or infinite values; expected finite logits."
                    )
            predicted = outputs.argmax(dim=1)
            if self.top_k == 1:
                return predicted, predicted == target
            true_score = outputs.gather(1, target[:, None])
            return predicted, (outputs > true_score).sum(dim=1) < self.top_k
        if outputs.ndim != 1:
            raise InputError(
                f"The {name} outputs have shape {tuple(outputs.shape)}; expected [B] labels or [B, C] scores."
            )
        if self.top_k > 1:
            raise InputError(
                f"top_k={self.top_k} needs scores of shape [B, C] for {name}, not labels."
            )
        predicted = self._check_indices(outputs, f"{name} predictions")
        return predicted, predicted == target

    def _check_indices(
        self, values: torch.Tensor, name: str, upper: int | None = None
    ) -> torch.Tensor:
        if values.is_floating_point() or values.is_complex():
            raise InputError(f"{name} have dtype {values.dtype}; expected integer class indices.")
        values = values.long()
        upper = self.num_classes if upper is None else upper
        if self.validate_args and values.numel() and (values.min() < 0 or values.max() >= upper):
            raise InputError(
                f"{name} hold values outside [0, {upper}) (min {int(values.min())}, max "
                f"{int(values.max())}); expected indices in range."
            )
        return values

    def update(
        self,
        old: torch.Tensor,
        new: torch.Tensor,
        target: torch.Tensor,
        slices: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Add one batch: old and new outputs ([B] labels or [B, C] scores) and the true labels."""
        if target.ndim != 1:
            raise InputError(f"target has shape {tuple(target.shape)}; expected [B] class indices.")
        sizes = {"old": old.shape[0], "new": new.shape[0], "target": target.shape[0]}
        if len(set(sizes.values())) > 1:
            raise MismatchError(
                f"Batch sizes differ ({sizes}); expected one row per sample in each."
            )
        target = self._check_indices(target, "target")
        old_pred, old_ok = self._prediction_and_correctness(old, target, "old")
        new_pred, new_ok = self._prediction_and_correctness(new, target, "new")
        code = old_ok.long() + 2 * new_ok.long() + 4 * (old_pred == new_pred).long()
        k = self.num_classes
        self.class_outcomes += torch.bincount(
            target * NUM_OUTCOMES + code, minlength=k * NUM_OUTCOMES
        ).view(k, NUM_OUTCOMES)
        negative = old_ok & ~new_ok
        self.flip_matrix += torch.bincount(
            old_pred[negative] * k + new_pred[negative], minlength=k * k
        ).view(k, k)
        given = dict(slices or {})
        if set(given) != set(self.slice_sizes):
            raise MismatchError(
                f"update() got slices {sorted(given)}; this metric was built with {sorted(self.slice_sizes)}."
            )
        for name, size in self.slice_sizes.items():
            groups = self._check_indices(given[name], f"slice {name!r} groups", size)
            if groups.shape != target.shape:
                raise MismatchError(
                    f"slice {name!r} has shape {tuple(groups.shape)}; expected {tuple(target.shape)}."
                )
            state = getattr(self, _slice_state(name))
            state += torch.bincount(
                groups * NUM_OUTCOMES + code, minlength=size * NUM_OUTCOMES
            ).view(size, NUM_OUTCOMES)

    def compute(self) -> Comparison:
        """The accumulated (and, under DDP, summed across processes) counts as a Comparison."""
        return Comparison(
            class_outcomes=self.class_outcomes.cpu().numpy().astype(np.int64),
            flip_matrix=self.flip_matrix.cpu().numpy().astype(np.int64),
            class_names=self.class_names,
            top_k=self.top_k,
            slices={
                name: SliceTable(
                    name,
                    tuple(range(size)),
                    getattr(self, _slice_state(name)).cpu().numpy().astype(np.int64),
                )
                for name, size in self.slice_sizes.items()
            },
        )


def _slice_state(name: str) -> str:
    return f"slice_outcomes__{name}"
