"""Lightning integration: flip metrics against the old model, and the objective in training.

Two pieces, for a ``LightningModule`` that trains the new model:

* :class:`FlipMetricsCallback` counts, over each validation epoch, how the new model's answers
  compare with the old model's (a :class:`~flipless.metrics.streaming.FlipMetric`, so the
  counts are summed across processes under DDP) and logs the chosen rates at the epoch's end.
* :func:`compatibility_step` is the documented way to use a compatibility objective in
  ``training_step``: it runs the teacher, the new model and the objective on a batch, logs
  every part of the loss and returns the total to optimise.

Batch contract (what :class:`~flipless.data.labeled.LabeledData` gives through torch's default
collate): a dict ``{"inputs": [B, ...], "labels": int64 [B], "ids": int64 [B]}``. The
callback reads the new model's logits from what ``validation_step`` returns: a dict with
``"logits"`` [B, C]. Every key can be renamed with the ``*_key`` arguments.

Lightning is the ``[lightning]`` extra; importing this module without it raises
:class:`~flipless.errors.MissingExtraError`. ``pytorch_lightning`` is used when installed (the
extra installs it), else ``lightning.pytorch``; the Trainer must come from the same package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from flipless.data.labeled import to_int64_array
from flipless.errors import InputError, MissingExtraError
from flipless.losses.objective import CompatibilityLoss
from flipless.metrics.comparison import Comparison
from flipless.metrics.counts import RATE_LABELS, FlipCounts
from flipless.metrics.streaming import FlipMetric
from flipless.teachers import CachedTeacher, EnsembleTeacher, ModelTeacher, Teacher
from flipless.validation import check_scores, first_few, index_array, to_numpy

_LIGHTNING_EXTRA = "pip install 'flipless[lightning]'"


def _import_lightning() -> ModuleType:
    """``pytorch_lightning``, else ``lightning.pytorch``, else a :class:`MissingExtraError`."""
    try:
        import pytorch_lightning
    except ImportError:
        try:
            import lightning.pytorch as unified
        except ImportError as exc:
            raise MissingExtraError(
                "flipless.integrations.lightning needs PyTorch Lightning, which is not "
                f"installed; install the extra with: {_LIGHTNING_EXTRA}"
            ) from exc
        return unified
    return pytorch_lightning


pl = _import_lightning()

#: The rates :class:`FlipMetricsCallback` logs unless told otherwise.
DEFAULT_METRICS = (
    "negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "accuracy_new",
    "accuracy_old",
)


def _batch_value(batch: Any, key: str, what: str, hint: str) -> Any:
    """``batch[key]``, or an :class:`InputError` saying what the batch should have held."""
    if not isinstance(batch, Mapping):
        raise InputError(
            f"the batch is a {type(batch).__name__}; expected a dict with {key!r} ({what}), "
            "as a DataLoader over flipless's LabeledData gives ({'inputs', 'labels', 'ids'})."
        )
    if key not in batch:
        raise InputError(
            f"the batch has no {key!r} ({what}); it has the keys {sorted(map(str, batch))}. {hint}"
        )
    return batch[key]


def _teacher_models(teacher: Teacher) -> list[nn.Module]:
    """The torch modules a teacher runs (none for cached logits)."""
    if isinstance(teacher, ModelTeacher):
        return [teacher.model]
    if isinstance(teacher, EnsembleTeacher):
        return [member.model for member in teacher.members]
    return []


def _place(model: nn.Module, device: torch.device) -> None:
    """Move ``model`` to ``device`` unless its first parameter (or buffer) is already there."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    if tensor is not None and tensor.device != device:
        model.to(device)


class _OldPredictionsById:
    """The old model's answers looked up by sample id: class indices [M] or scores [M, C].

    Built from a mapping ``{id: class}`` or from an array whose row ``i`` belongs to id ``i``.
    """

    def __init__(self, old_predictions: Any) -> None:
        if isinstance(old_predictions, Mapping):
            if not old_predictions:
                raise InputError("old_predictions is an empty mapping; expected {id: class}.")
            ids = to_int64_array(list(old_predictions.keys()), "old_predictions' keys (ids)")
            values, _ = index_array(
                list(old_predictions.values()), "old_predictions' values (classes)"
            )
            rows = torch.from_numpy(values)
        else:
            array = to_numpy(old_predictions, "old_predictions")
            if array.ndim == 2:
                rows = torch.from_numpy(check_scores(array, "old_predictions").astype(np.float32))
            elif array.ndim == 1:
                rows = torch.from_numpy(index_array(array, "old_predictions")[0])
            else:
                raise InputError(
                    f"old_predictions has shape {tuple(array.shape)}; expected a mapping "
                    "{id: class}, or an array indexed by id: classes [M] or scores [M, C]."
                )
            ids = np.arange(rows.shape[0], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.sorted_ids = torch.from_numpy(ids[order])
        self.rows = rows[torch.from_numpy(order)]

    def lookup(self, ids: Any, device: torch.device) -> torch.Tensor:
        """The old answers for ``ids`` [B], on ``device``; every id must be known."""
        query = torch.as_tensor(ids).detach().cpu()
        if query.ndim != 1 or query.is_floating_point() or query.dtype == torch.bool:
            raise InputError(
                f"the batch's ids are {query.dtype} {tuple(query.shape)}; expected integer "
                "sample ids [B]."
            )
        query = query.long()
        position = torch.searchsorted(self.sorted_ids, query).clamp(max=len(self.sorted_ids) - 1)
        found = self.sorted_ids[position] == query
        if not bool(found.all()):
            absent = query[~found].numpy()
            raise InputError(
                f"{absent.size} of {query.numel()} ids in this validation batch have no old "
                f"prediction (ids {first_few(absent)}); expected old_predictions to cover every "
                "validation sample, keyed by the ids the batches carry."
            )
        return self.rows[position].to(device)


class FlipMetricsCallback(pl.Callback):
    """Log flip metrics of the model being trained against the old model, each validation epoch.

    Each validation batch updates a :class:`~flipless.metrics.streaming.FlipMetric` with the
    old model's and the new model's answers; at the epoch's end the counts are summed across
    processes (DDP), each rate in ``metrics`` is logged as ``f"{prefix}{name}"`` with
    ``pl_module.log`` and the comparison is kept in :attr:`last_comparison`; the counts start
    from zero at each epoch's start. Rates are ratios of dataset-level counts (NaN when the
    denominator is 0), so they equal :func:`flipless.compare` on the whole validation set,
    however it is batched; the logged values are float32 (Lightning's logging dtype),
    :attr:`last_comparison` is exact.

    Contract: ``validation_step`` returns a dict with ``logits_key`` (the new model's logits
    [B, C]); the batch is a dict with ``label_key`` (true classes [B]) and, depending on where
    the old answers come from, ``input_key`` (fed to ``old_model``) or ``id_key`` (looked up
    in ``old_predictions``). All validation dataloaders are counted together. The sanity-check
    batches are checked against this contract but neither logged nor kept.

    Args:
        old_model: the old network, run on each batch's inputs in eval mode under no_grad,
            frozen (its parameters stop requiring gradients) and moved to the new model's
            device. Give this or ``old_predictions``.
        old_predictions: the old model's answers by sample id: a mapping ``{id: class}``, or an
            array indexed by id holding classes [M] or scores [M, C].
        num_classes: C; by default the width of the first batch's new logits.
        top_k: count a model right when the true class is among its top k scores.
        prefix: prepended to every logged name.
        metrics: names of the rates to log (any of ``flipless.metrics.counts.RATE_LABELS``).
        slice_key: a batch key holding a group index in ``[0, slice_groups)`` per sample;
            every rate is then also logged per group as ``f"{prefix}{slice_key}_{g}/{name}"``.
        slice_groups: how many groups ``slice_key`` has.
        id_key, input_key, label_key: batch keys; logits_key: key of ``validation_step``'s output.

    Under DDP, Lightning's default ``DistributedSampler`` pads the validation set by repeating
    samples so every process gets as many; those repeats are counted too. Use a sampler that
    does not repeat samples where exact counts matter.
    """

    def __init__(
        self,
        old_model: nn.Module | None = None,
        old_predictions: Any = None,
        *,
        num_classes: int | None = None,
        top_k: int = 1,
        prefix: str = "val/",
        metrics: Sequence[str] = DEFAULT_METRICS,
        slice_key: str | None = None,
        slice_groups: int | None = None,
        id_key: str = "ids",
        input_key: str = "inputs",
        label_key: str = "labels",
        logits_key: str = "logits",
    ) -> None:
        super().__init__()
        if (old_model is None) == (old_predictions is None):
            given = "both" if old_model is not None else "neither"
            raise InputError(
                f"FlipMetricsCallback got {given} of old_model and old_predictions; expected "
                "exactly one: the old network (old_model=) or its answers by sample id "
                "(old_predictions=)."
            )
        self.old_teacher = ModelTeacher(old_model) if old_model is not None else None
        self.old_by_id = (
            _OldPredictionsById(old_predictions) if old_predictions is not None else None
        )
        if isinstance(metrics, str):
            raise InputError(f"metrics={metrics!r}; expected a sequence of rate names.")
        unknown = [name for name in metrics if name not in RATE_LABELS]
        if unknown or not metrics:
            raise InputError(
                f"metrics={list(metrics)!r} has unknown or no rate names {unknown}; expected "
                f"some of {list(RATE_LABELS)}."
            )
        if not isinstance(prefix, str):
            raise InputError(f"prefix={prefix!r}; expected a string such as 'val/'.")
        if (slice_key is None) != (slice_groups is None):
            raise InputError(
                f"slice_key={slice_key!r} and slice_groups={slice_groups!r}; give both (the "
                "batch key of the group indices and how many groups there are) or neither."
            )
        self.top_k = top_k
        self.prefix = prefix
        self.metrics = tuple(metrics)
        self.slice_key = slice_key
        self.slice_groups = slice_groups
        self.id_key = id_key
        self.input_key = input_key
        self.label_key = label_key
        self.logits_key = logits_key
        self.metric = self._build_metric(num_classes) if num_classes is not None else None
        #: The comparison of the last finished validation epoch (None before the first).
        self.last_comparison: Comparison | None = None

    @property
    def last_counts(self) -> FlipCounts | None:
        """The dataset-level counts of the last finished validation epoch."""
        return self.last_comparison.counts if self.last_comparison is not None else None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.old_teacher is not None:
            _place(self.old_teacher.model, pl_module.device)
        if self.metric is not None:  # also drops counts of an epoch that ended in an error
            self.metric.reset()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        new_logits = self._new_logits(outputs)
        labels = _batch_value(
            batch, self.label_key, "true classes [B]", "Put the labels in every batch."
        )
        if self.old_teacher is not None:
            inputs = _batch_value(
                batch,
                self.input_key,
                "the old model's inputs",
                f"Put the inputs in every batch, or pass input_key= (now {self.input_key!r}).",
            )
            old = self.old_teacher.logits(inputs)
        else:
            ids = _batch_value(
                batch,
                self.id_key,
                "sample ids [B], to look up old_predictions",
                f"Put the sample ids in every batch, or pass id_key= (now {self.id_key!r}).",
            )
            old = self.old_by_id.lookup(ids, new_logits.device)
        slices = None
        if self.slice_key is not None:
            groups = _batch_value(
                batch, self.slice_key, "slice group indices [B]", "Put them in every batch."
            )
            slices = {self.slice_key: torch.as_tensor(groups, device=new_logits.device)}
        metric = self._metric(new_logits)
        metric.update(old.to(new_logits.device), new_logits, labels.to(new_logits.device), slices)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.metric is None or self.metric.update_count == 0:  # no validation batch ran
            return
        comparison = self.metric.compute()  # summed across processes
        if trainer.sanity_checking:
            return
        self.last_comparison = comparison
        # Every process holds the same summed counts, so a max across processes keeps the
        # value exactly and spares the warning Lightning gives for unsynced epoch values.
        for name, value in self._values(comparison).items():
            pl_module.log(name, value, sync_dist=True, reduce_fx="max")

    def _values(self, comparison: Comparison) -> dict[str, float]:
        """The logged names and values: each rate, then each rate per slice group."""
        values = {f"{self.prefix}{name}": comparison.rate(name).value for name in self.metrics}
        if self.slice_key is not None:
            table = comparison.slices[self.slice_key]
            for group in table.groups:
                counts = table.counts(group)
                for name in self.metrics:
                    key = f"{self.prefix}{self.slice_key}_{group}/{name}"
                    values[key] = counts.rate(name).value
        return values

    def _new_logits(self, outputs: Any) -> torch.Tensor:
        if not isinstance(outputs, Mapping) or self.logits_key not in outputs:
            if isinstance(outputs, Mapping):
                got = f"a dict with the keys {sorted(map(str, outputs))}"
            else:
                got = "None" if outputs is None else f"a {type(outputs).__name__}"
            raise InputError(
                f"FlipMetricsCallback needs the new model's logits of every validation batch: "
                f"validation_step must return a dict with {self.logits_key!r} (logits [B, C]); "
                f"it returned {got}. End validation_step with "
                f"`return {{{self.logits_key!r}: logits}}` (add the loss if you like)."
            )
        logits = outputs[self.logits_key]
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(
                f"validation_step returned {self.logits_key!r} of {got}; expected the new "
                "model's logits, a tensor [B, C]."
            )
        return logits.detach()

    def _build_metric(self, num_classes: int) -> FlipMetric:
        slices = {self.slice_key: self.slice_groups} if self.slice_key is not None else None
        return FlipMetric(num_classes=num_classes, top_k=self.top_k, slices=slices)

    def _metric(self, new_logits: torch.Tensor) -> FlipMetric:
        """The accumulator on the logits' device (built now, with C from them, if not yet)."""
        if self.metric is None:
            self.metric = self._build_metric(new_logits.shape[1])
        if self.metric.device != new_logits.device:
            self.metric = self.metric.to(new_logits.device)
        return self.metric


def compatibility_step(
    module: pl.LightningModule,
    batch: Mapping[str, Any],
    objective: CompatibilityLoss,
    teacher: Teacher | None = None,
    *,
    prefix: str = "train/",
    input_key: str = "inputs",
    label_key: str = "labels",
    id_key: str = "ids",
) -> torch.Tensor:
    """The compatibility loss of one batch, for ``training_step``; logs each part.

    Computes ``total, parts = objective(module(inputs), labels, teacher_logits)`` where
    ``teacher_logits = teacher.logits(inputs, ids)`` under no_grad (a model teacher ignores the
    ids, a :class:`~flipless.teachers.CachedTeacher` looks them up), passes the teacher's
    ``class_mask`` when it knows only some classes, logs every part (cross-entropy, each term,
    the total) as ``module.log(f"{prefix}{name}", value)`` and returns ``total``. The teacher's
    models are moved to ``module.device``. ``teacher`` may be None only when no term needs it.

    Example::

        def training_step(self, batch, batch_idx):
            return compatibility_step(self, batch, self.objective, self.teacher)
    """
    if objective.needs_features:
        raise InputError(
            "this objective has a feature term (bct or cna), which needs the new model's "
            "features; compatibility_step passes logits only. Call the objective yourself with "
            "new_features=model.features(inputs) in training_step."
        )
    hint = "A DataLoader over flipless's LabeledData gives inputs, labels and ids."
    inputs = _batch_value(batch, input_key, "the model's inputs", hint)
    labels = _batch_value(batch, label_key, "true classes [B]", hint)
    teacher_logits = class_mask = None
    if teacher is not None:
        ids = batch.get(id_key) if isinstance(batch, Mapping) else None
        if ids is None and isinstance(teacher, CachedTeacher):
            raise InputError(
                f"a CachedTeacher looks its logits up by sample id, but the batch has no "
                f"{id_key!r}; put the ids in every batch, or pass id_key=."
            )
        for model in _teacher_models(teacher):
            _place(model, module.device)
        with torch.no_grad():
            teacher_logits = teacher.logits(inputs, ids)
        mask = getattr(teacher, "class_mask", None)
        class_mask = mask.to(module.device) if mask is not None else None
    elif objective.needs_teacher:
        raise InputError(
            "this objective needs the old model's logits (a term or a focus rule uses them), "
            "but teacher is None; pass a ModelTeacher(old_model) or a CachedTeacher."
        )
    total, parts = objective(module(inputs), labels, teacher_logits, class_mask=class_mask)
    for name, value in parts.items():
        module.log(f"{prefix}{name}", value, batch_size=int(labels.shape[0]))
    return total
