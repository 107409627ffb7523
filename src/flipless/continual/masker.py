"""One object for a task sequence: which layers are protected, their importance so far, and the
hook that soft-masks the next task's training.

Typical use (the loop's hook; :mod:`flipless.integrations.hf` and
:mod:`flipless.integrations.lightning` have callbacks that take the same hook)::

    masker = SoftMasker(model, layers="hf-encoder", granularity="unit", mode="update")
    fit(model, task_1, ...)                     # the first task trains freely
    masker.learn(task_1)                        # importance for task 1
    fit(model, task_2, ..., hooks=[masker.hook()])
    masker.learn(task_2)                        # max(importance 1, importance 2)
    masker.report()                             # share of units protected per layer

In a loop of one's own: ``hook = masker.hook(); hook.bind(model); hook.attach(optimizer)``,
then ``hook.before_optimizer_step()`` right before each ``optimizer.step()``.
"""

from __future__ import annotations

import os

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import Dataset

from flipless.continual.importance import (
    GRANULARITIES,
    LayerSelection,
    LossFunction,
    accumulate,
    compute_importance,
    load_importance,
    resolve_layers,
    save_importance,
)
from flipless.continual.softmask import MODES, SoftMask, protected_share, protected_share_table
from flipless.errors import InputError, MismatchError


class SoftMasker:
    """Soft-masking over a sequence of tasks for ``model``.

    Args:
        model: the model trained task after task (its layers are chosen once, here).
        layers: None (every nn.Linear and sub-network layer), a preset of
            :data:`~flipless.continual.importance.LAYER_PRESETS` ("hf-attention",
            "hf-feed-forward", "hf-encoder", "lora"), module types, or fnmatch name patterns.
        granularity: "unit" (one importance per output row) or "parameter".
        mode: "gradient" or "update" (optimizer-aware); see :class:`SoftMask`.

    ``importance`` is the element-wise maximum over the tasks learned so far (None before the
    first :meth:`learn`); ``tasks_learned`` counts them.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSelection = None,
        *,
        granularity: str = "unit",
        mode: str = "gradient",
    ) -> None:
        if granularity not in GRANULARITIES:
            raise InputError(f"granularity={granularity!r}; expected one of {GRANULARITIES}.")
        if mode not in MODES:
            raise InputError(f"mode={mode!r}; expected one of {MODES}.")
        self.model = model
        self.layer_names = list(resolve_layers(model, layers))
        self.granularity = granularity
        self.mode = mode
        self.importance: dict[str, torch.Tensor] | None = None
        self.tasks_learned = 0

    def learn(
        self,
        data: Dataset,
        loss: str | LossFunction = "task",
        *,
        batch_size: int = 64,
        seed: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Measure the importance of the task just trained (``data``: its training data) and
        fold it into :attr:`importance` by the element-wise maximum. Returns this task's own
        importance."""
        task = compute_importance(
            self.model,
            data,
            self.layer_names,
            loss=loss,
            batch_size=batch_size,
            granularity=self.granularity,
            seed=seed,
        )
        self.importance = task if self.importance is None else accumulate(self.importance, task)
        self.tasks_learned += 1
        return task

    def _require_importance(self) -> dict[str, torch.Tensor]:
        if self.importance is None:
            raise InputError(
                "no importance yet: call learn(task_data) after training a task (or load())."
            )
        return self.importance

    def hook(self) -> SoftMask:
        """A fresh :class:`SoftMask` hook for the next task's training, with the importance
        accumulated so far."""
        return SoftMask(self._require_importance(), mode=self.mode)

    def protected_share(self, threshold: float = 0.5) -> dict[str, float]:
        """Per layer, the share of units (or parameters) with importance above ``threshold``."""
        return protected_share(self._require_importance(), threshold)

    def report(self, threshold: float = 0.5, console: Console | None = None) -> dict[str, float]:
        """Print the protected share per layer as a table and return it."""
        importance = self._require_importance()
        (console or Console()).print(protected_share_table(importance, threshold))
        return protected_share(importance, threshold)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the accumulated importance (safetensors, its granularity recorded)."""
        save_importance(self._require_importance(), path, granularity=self.granularity)

    def load(self, path: str | os.PathLike[str], tasks_learned: int = 1) -> None:
        """Read importance saved earlier (from ``tasks_learned`` tasks); its layers and
        granularity must match this masker's."""
        importance, granularity = load_importance(path)
        if granularity != self.granularity:
            raise MismatchError(
                f"{path} holds {granularity!r} importance; this masker uses "
                f"{self.granularity!r}. Create the SoftMasker with granularity={granularity!r}."
            )
        if sorted(importance) != sorted(self.layer_names):
            raise MismatchError(
                f"{path} covers layers {sorted(importance)[:5]}…; this masker protects "
                f"{sorted(self.layer_names)[:5]}…. Select the same layers as when it was saved."
            )
        self.importance = importance
        self.tasks_learned = tasks_learned

    def __repr__(self) -> str:
        return (
            f"SoftMasker(layers={len(self.layer_names)}, granularity={self.granularity!r}, "
            f"mode={self.mode!r}, tasks_learned={self.tasks_learned})"
        )
