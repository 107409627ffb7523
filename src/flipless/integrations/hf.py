"""Compatible fine-tuning with the Hugging Face ``Trainer``, and flip metrics for its evaluation.

:class:`CompatibilityTrainer` is a ``transformers.Trainer`` whose training loss is a
:class:`~flipless.losses.objective.CompatibilityLoss` (e.g. focal distillation, Yan et al.,
CVPR 2021: ``L = CE + λ · (1/N) Σ_i (base + boost · [old right on i]) · KL_T(old_i ‖ new_i)``).
For each training batch it

1. takes the labels (``TrainingArguments.label_names``, default ``labels``) and the sample ids
   (``id_column``, default ``"ids"``) out of the batch,
2. runs the new model once on the rest, without labels, so the model computes no loss itself,
3. gets the old model's logits: from the old model, frozen, in eval mode, under ``no_grad`` and
   on the new model's device (it is called with the same keyword arguments), or from a
   :class:`~flipless.teachers.CachedTeacher` by sample id,
4. returns the objective's total and keeps its parts, whose means over the batches since the
   last log appear in ``trainer.state.log_history`` (and every reporter) as ``compat/<part>``.

The objective is a batch mean, so the Trainer divides it by the gradient-accumulation steps
(``num_items_in_batch`` is not used). Evaluation is unchanged: ``prediction_step`` drops the
id column and the loss is the model's own (cross-entropy), as with a plain ``Trainer``;
:func:`compatibility_metrics` adds the flip rates against the old model to it.

The id column and ``remove_unused_columns``: the Trainer drops every dataset column that the
model's ``forward`` does not take, which would drop the ids; :class:`CompatibilityTrainer`
adds the id column to the columns it keeps (the labels are kept already). Ids must be
integers, unique over the training set, and the same ones the cache was built with.

transformers and accelerate are the optional extra ``[hf]``; importing this module without
them raises :class:`~flipless.errors.MissingExtraError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from flipless.errors import InputError, MismatchError, MissingExtraError
from flipless.losses.objective import CompatibilityLoss
from flipless.losses.registry import build_loss
from flipless.metrics.comparison import compare
from flipless.teachers import CachedTeacher, EnsembleTeacher, LabelMap, ModelTeacher, Teacher

try:
    import accelerate  # noqa: F401  (transformers.Trainer needs it)
    import transformers
except ImportError as exc:
    raise MissingExtraError(
        "flipless.integrations.hf needs transformers and accelerate, which are not installed; "
        f"install the extra with: pip install 'flipless[hf]' ({exc})"
    ) from exc


def _logits_of(outputs: Any) -> torch.Tensor:
    """The logits of a model output: ``outputs["logits"]`` of a ModelOutput, else ``outputs[0]``."""
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if not isinstance(logits, torch.Tensor):
        raise InputError(
            f"the model must return logits (a ModelOutput with 'logits', or a tuple of them "
            f"first); got {type(logits).__name__}."
        )
    return logits


class HFLogits(nn.Module):
    """A Hugging Face model called with a batch of keyword arguments, returning its logits.

    ``HFLogits(model)(batch) == model(**batch).logits``, so that :class:`ModelTeacher`,
    :class:`EnsembleTeacher` and :meth:`CachedTeacher.build`, which call a model with one
    positional input, can run a Hugging Face model. It is in training mode exactly when the
    wrapped model is, so ``.train()`` called on the old model is noticed (and undone, with a
    warning) by :class:`ModelTeacher`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        self.model = model

    @property
    def training(self) -> bool:  # type: ignore[override]
        """Whether the wrapped model is in training mode."""
        return self.model.training

    @training.setter
    def training(self, mode: bool) -> None:
        # nn.Module sets this flag and then calls train(mode) on its children: the wrapped
        # model's own flag is the one that counts, so there is nothing to store here.
        pass

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if not isinstance(batch, Mapping):
            raise InputError(
                f"HFLogits takes a batch of keyword arguments (a dict such as the tokenizer's "
                f"output); got {type(batch).__name__}."
            )
        return _logits_of(self.model(**batch))


def _as_loss(compatibility_loss: CompatibilityLoss | str) -> CompatibilityLoss:
    if isinstance(compatibility_loss, str):
        compatibility_loss = build_loss(compatibility_loss)
    if not isinstance(compatibility_loss, CompatibilityLoss):
        raise InputError(
            "compatibility_loss must be a CompatibilityLoss or a preset name such as 'fd-kl'; "
            f"got {type(compatibility_loss).__name__}."
        )
    if compatibility_loss.needs_features:
        raise InputError(
            "CompatibilityTrainer passes logits only, but this objective has a feature term "
            "(bct or cna), which needs penultimate features; use a logit term (fd-kl, fd-lm, "
            "ldi, elodi, strict-imitation, new-error)."
        )
    return compatibility_loss


def _as_teacher(
    teacher: nn.Module | Teacher | None, label_map: LabelMap | None
) -> ModelTeacher | Teacher | None:
    if isinstance(teacher, nn.Module):
        wrapped = teacher if isinstance(teacher, HFLogits) else HFLogits(teacher)
        return ModelTeacher(wrapped, label_map=label_map)
    if label_map is not None:
        raise InputError(
            f"label_map applies only to an old model passed as teacher=; got "
            f"{type(teacher).__name__}. A CachedTeacher or EnsembleTeacher carries its own "
            "label map: build it with one."
        )
    if teacher is None or callable(getattr(type(teacher), "logits", None)):
        return teacher
    raise InputError(
        "teacher must be the old model (an nn.Module called with the batch's keyword arguments), "
        f"a CachedTeacher, or another flipless teacher; got {type(teacher).__name__}."
    )


def _teacher_modules(teacher: Teacher | None) -> list[nn.Module]:
    """The old models a teacher runs (to be moved to the new model's device)."""
    if isinstance(teacher, ModelTeacher):
        return [teacher.model]
    if isinstance(teacher, EnsembleTeacher):
        return [member.model for member in teacher.members]
    return []


class CompatibilityTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` that trains the new model with a compatibility objective.

    Args:
        compatibility_loss: the objective, or a preset name for
            :func:`~flipless.losses.registry.build_loss` (``"fd-kl"``, ``"ldi"``, …).
        teacher: the old model (any ``nn.Module`` called with the batch's keyword arguments,
            e.g. a ``PreTrainedModel``; it is frozen and put in eval mode), a
            :class:`~flipless.teachers.CachedTeacher` (logits looked up by the ids in
            ``id_column``), or another teacher such as an
            ``EnsembleTeacher([HFLogits(m) for m in old_models])``. May be None only when
            the objective needs no teacher.
        id_column: the batch key of the integer sample ids (kept by ``remove_unused_columns``).
        label_map: when the old model knows fewer classes than the new one (with an old model
            passed as ``teacher``); the terms then leave the unknown classes out.
        *args, **kwargs: those of ``transformers.Trainer`` (model, args, datasets, …), except
            ``compute_loss_func`` and label smoothing, which the objective replaces.
    """

    def __init__(
        self,
        *args: Any,
        compatibility_loss: CompatibilityLoss | str,
        teacher: nn.Module | Teacher | None,
        id_column: str = "ids",
        label_map: LabelMap | None = None,
        **kwargs: Any,
    ) -> None:
        self.compatibility_loss = _as_loss(compatibility_loss)
        self.teacher = _as_teacher(teacher, label_map)
        if self.teacher is None and self.compatibility_loss.needs_teacher:
            raise InputError(
                "the objective needs the old model's logits, but teacher=None; pass the old "
                "model or a CachedTeacher."
            )
        if not isinstance(id_column, str) or not id_column:
            raise InputError(f"id_column must be a non-empty string; got {id_column!r}.")
        self.id_column = id_column
        if kwargs.get("compute_loss_func") is not None:
            raise InputError(
                "CompatibilityTrainer computes the loss with compatibility_loss; "
                "remove compute_loss_func."
            )
        self._evaluating = False
        self._part_sums: dict[str, torch.Tensor] = {}
        self._part_batches = 0
        super().__init__(*args, **kwargs)
        if self.args.label_smoothing_factor != 0:
            raise InputError(
                f"label_smoothing_factor={self.args.label_smoothing_factor}, but the "
                "compatibility objective uses plain cross-entropy; set it to 0."
            )
        if len(self.label_names) != 1:
            raise InputError(
                f"the objective takes one label column; the trainer has label_names="
                f"{self.label_names}. Set TrainingArguments(label_names=['labels'])."
            )
        # The objective is a batch mean: no num_items_in_batch normalisation by the model, so
        # the Trainer divides the loss by the gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; the logged parts count only this run's batches."""
        self._part_sums, self._part_batches = {}, 0
        return super().train(*args, **kwargs)

    # -- columns -----------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self) -> None:
        """The model's ``forward`` arguments and the labels (Trainer), and the id column."""
        super()._set_signature_columns_if_needed()
        if self.id_column not in self._signature_columns:
            self._signature_columns.append(self.id_column)

    # -- loss --------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The objective on one batch (the new model run once); see the module docstring."""
        if self._evaluating:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        batch = dict(inputs)
        label_name = self.label_names[0]
        if label_name not in batch:
            raise InputError(
                f"the batch has no {label_name!r} column (it has {sorted(batch)}); the "
                "objective needs the labels."
            )
        labels = batch.pop(label_name)
        ids = batch.pop(self.id_column, None)
        outputs = model(**batch)
        new_logits = _logits_of(outputs)
        teacher_logits, class_mask = self._teacher_outputs(batch, ids, new_logits)
        total, parts = self.compatibility_loss(
            new_logits, labels, teacher_logits, class_mask=class_mask
        )
        for name, value in parts.items():
            key = f"compat/{name}"
            self._part_sums[key] = self._part_sums.get(key, 0.0) + value.float()
        self._part_batches += 1
        return (total, outputs) if return_outputs else total

    def _teacher_outputs(
        self, batch: dict[str, Any], ids: Any, new_logits: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The teacher's logits [N, C] and class mask for the batch, on the new logits' device."""
        if self.teacher is None:
            return None, None
        if isinstance(self.teacher, CachedTeacher):
            if ids is None:
                raise InputError(
                    f"a CachedTeacher looks the old logits up by sample id, but the batch has no "
                    f"{self.id_column!r} column (it has {sorted(batch)}); add the integer ids the "
                    "cache was built with to the training data, or pass id_column=."
                )
            teacher_logits = self.teacher.logits(new_logits, ids)
        else:
            for module in _teacher_modules(self.teacher):
                parameter = next(module.parameters(), None)
                if parameter is not None and parameter.device != new_logits.device:
                    module.to(new_logits.device)
            teacher_logits = self.teacher.logits(batch, ids)
        if teacher_logits.shape != new_logits.shape:
            raise MismatchError(
                f"the teacher gives logits {tuple(teacher_logits.shape)} for new logits "
                f"{tuple(new_logits.shape)}; expected the same shape. If the old model knows "
                f"fewer classes, pass label_map=LabelMap(old_to_new, {new_logits.shape[-1]}) "
                "(or build the CachedTeacher from a ModelTeacher with that label map)."
            )
        class_mask = getattr(self.teacher, "class_mask", None)
        if class_mask is not None:
            class_mask = class_mask.to(new_logits.device)
        # e.g. a float32 cache for a float64 model: compute the terms in the wider type
        dtype = torch.promote_types(teacher_logits.dtype, new_logits.dtype)
        return teacher_logits.to(new_logits.device, dtype), class_mask

    # -- evaluation --------------------------------------------------------------------------
    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The Trainer's own step (the model's loss and logits), without the id column."""
        inputs = {key: value for key, value in inputs.items() if key != self.id_column}
        self._evaluating = True
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        finally:
            self._evaluating = False

    # -- logging -----------------------------------------------------------------------------
    def log(self, logs: dict[str, float], *args: Any) -> None:
        """Add the mean ``compat/<part>`` since the last log to each training log (with "loss")."""
        if "loss" in logs and self._part_batches:
            names = list(self._part_sums)
            means = torch.stack([self._part_sums[name] for name in names]) / self._part_batches
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means, reduction="mean")
            logs = {**logs, **dict(zip(names, means.tolist(), strict=True))}
            self._part_sums, self._part_batches = {}, 0
        super().log(logs, *args)  # *args: start_time, in transformers ≥ 4.47


def _as_array(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim not in (1, 2):
        raise InputError(f"{what} must be labels [N] or scores [N, C]; got shape {array.shape}.")
    return array


def compatibility_metrics(
    old_predictions: Any,
) -> Callable[[transformers.EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for the Trainer: the new model's flips against the old model's.

    ``old_predictions`` are the old model's labels [N] or scores [N, C] on the evaluation set,
    in its order (the Trainer does not shuffle it). The returned function takes the Trainer's
    ``EvalPrediction`` and returns, via :func:`flipless.compare` (definitions in
    ``docs/metrics.md``): ``accuracy`` (of the new model), ``negative_flip_rate``
    (#(old right, new wrong) / N, Yan et al. CVPR 2021), ``positive_flip_rate`` and
    ``backward_trust_compatibility`` (#(both right) / #(old right), Bansal et al. AAAI 2019).
    ``trainer.evaluate()`` reports them as ``eval_negative_flip_rate`` and so on.
    """
    old = _as_array(old_predictions, "old_predictions")

    def metrics(prediction: transformers.EvalPrediction) -> dict[str, float]:
        new = prediction.predictions
        if isinstance(new, tuple):  # (logits, hidden states, …): the logits come first
            new = new[0]
        new = _as_array(new, "the evaluation predictions")
        labels = _as_array(prediction.label_ids, "the evaluation labels")
        if new.shape[0] != old.shape[0]:
            raise MismatchError(
                f"the evaluation set has {new.shape[0]} samples but old_predictions has "
                f"{old.shape[0]}; expected the old model's predictions on the same evaluation "
                "set, in the same order."
            )
        comparison = compare(old, new, labels, keep_instances=False)
        return {
            "accuracy": float(comparison.accuracy_new),
            "negative_flip_rate": float(comparison.negative_flip_rate),
            "positive_flip_rate": float(comparison.positive_flip_rate),
            "backward_trust_compatibility": float(comparison.backward_trust_compatibility),
        }

    return metrics
