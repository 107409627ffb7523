"""A Keras model that trains compatibly with ``compile()`` / ``fit()`` / ``evaluate()``.

:class:`CompatibleModel` wraps the new model and a frozen old model. Keras 3's ``train_step``
differs per backend (a ``GradientTape``, ``jax.value_and_grad``, ``loss.backward()``), but
every backend's step calls ``model.compute_loss(x, y, y_pred, sample_weight, training)``
inside its gradient computation (JAX through ``stateless_compute_loss``, which also carries
metric updates made there). So the wrapper overrides only ``compute_loss``: there it runs the
old model once (``training=False``, ``stop_gradient``), evaluates the compatibility
objective, updates the flip metrics and one tracker per part of the objective, and adds the
layers' own losses (regularisers, ``add_loss``). The new model runs once per step, as Keras
runs it; the old model once.

Old logits come from the old model, or from the data (no old model at training time):
pass ``x = {"inputs": inputs, "old_logits": cached}``; ``call`` ignores ``old_logits``, so
``predict`` takes either form. Cached logits are valid only when inputs are not randomly
augmented. When both exist, the cached logits are used.

``evaluate`` and validation report the same objective and the flip metrics against the old
model (``val_negative_flip_rate``, …).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from flipless.errors import InputError, MismatchError
from flipless.keras.metrics import (
    BackwardErrorCompatibility,
    BackwardTrustCompatibility,
    NegativeFlipRate,
    PositiveFlipRate,
    outcome_counts,
)
from flipless.keras.objective import CompatibilityLoss, build_loss
from flipless.keras.terms import Tensor, as_float, static_shape

#: The keys of a dict input that carries cached old logits.
INPUTS, OLD_LOGITS = "inputs", "old_logits"


def _split(x: Any) -> tuple[Any, Any]:
    """(model inputs, cached old logits or None) from ``x``."""
    if isinstance(x, Mapping) and OLD_LOGITS in x:
        if set(x) != {INPUTS, OLD_LOGITS}:
            raise InputError(
                f"an input dict with {OLD_LOGITS!r} must have exactly the keys {INPUTS!r} and "
                f"{OLD_LOGITS!r}; got {sorted(x)}. Put the model's own inputs under {INPUTS!r}."
            )
        return x[INPUTS], x[OLD_LOGITS]
    return x, None


def _check_model(model: Any, role: str) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise InputError(f"{role} must be a Keras model or layer; got {type(model).__name__}.")


@keras.saving.register_keras_serializable(package="flipless")
class CompatibleModel(keras.Model):
    """The new model, trained with a compatibility objective against a frozen old model.

    Args:
        new_model: the Keras model being trained (any model or layer: Sequential, functional,
            subclassed); its outputs are this model's outputs.
        old_model: the reference model, or None when every batch carries cached old logits.
            It is frozen here (``old_model.trainable = False``) and always run with
            ``training=False``; its weights are saved with this model.
        objective: a preset name of :mod:`flipless.losses.registry` (``"fd-kl"``,
            ``"fd-lm"``, ``"ldi"``, ``"elodi"``, ``"strict-imitation"``, ``"new-error"``) or a
            :class:`flipless.keras.CompatibilityLoss`.
        from_logits: whether both models output logits (True) or softmax probabilities
            (False: the terms then use log(max(p, ε)), ε = ``keras.backend.epsilon()``,
            whose softmax is p again). Cached old logits are of the same kind.
        class_mask: bool [C], the classes the old model knows (its outputs must already be
            placed in the new label space); the distillation terms leave the others out.
        flip_metrics: log the negative / positive flip rate, BTC and BEC against the old model.

    ``compile`` takes every Keras argument except ``loss`` (the objective is the loss); extra
    metrics such as ``"accuracy"`` see the new model's outputs.
    """

    def __init__(
        self,
        new_model: keras.layers.Layer,
        old_model: keras.layers.Layer | None = None,
        objective: str | CompatibilityLoss = "fd-kl",
        from_logits: bool = True,
        class_mask: Any = None,
        flip_metrics: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_model(new_model, "new_model")
        if old_model is not None:
            _check_model(old_model, "old_model")
            if old_model is new_model:
                raise InputError(
                    "new_model and old_model are the same object; expected a separate new model "
                    "(clone the old one with keras.models.clone_model to fine-tune from it)."
                )
        if isinstance(objective, str):
            objective = build_loss(objective)
        if not isinstance(objective, CompatibilityLoss):
            raise InputError(
                "objective must be a preset name or a flipless.keras.CompatibilityLoss; got "
                f"{type(objective).__name__}."
            )
        mask = None if class_mask is None else np.asarray(class_mask)
        if mask is not None and mask.dtype != bool:
            raise InputError(
                f"class_mask must hold booleans (True: a class the old model knows); got "
                f"{mask.dtype}."
            )
        if old_model is not None:
            old_model.trainable = False
        self.new_model = new_model
        self.old_model = old_model
        self.objective = objective
        self.from_logits = bool(from_logits)
        self.class_mask = mask
        self.with_flip_metrics = bool(flip_metrics)
        self.part_trackers = [
            keras.metrics.Mean(name=name) for name in ("cross_entropy", *objective.part_names)
        ]
        self.flip_metrics = (
            [
                NegativeFlipRate(),
                PositiveFlipRate(),
                BackwardTrustCompatibility(),
                BackwardErrorCompatibility(),
            ]
            if flip_metrics
            else []
        )
        if new_model.built and (old_model is None or old_model.built):
            self.built = True  # nothing of its own to build: it can be saved before a call

    def call(self, inputs: Any, training: bool | None = None) -> Tensor:
        """The new model's outputs; a dict with cached ``old_logits`` is unwrapped."""
        model_inputs, _ = _split(inputs)
        return self.new_model(model_inputs, training=training)

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, **kwargs: Any) -> None:
        """Keras's ``compile`` without ``loss``: this model's loss is its objective."""
        if loss is not None:
            raise InputError(
                "CompatibleModel trains with its own objective (cross-entropy plus the "
                "compatibility terms), so compile() takes no loss; got loss="
                f"{loss!r}. Choose the objective when building the model, e.g. "
                "CompatibleModel(new, old, objective='fd-kl')."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compile again from a saved model's settings (Keras skips a custom ``compile``)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _to_logits(self, outputs: Tensor) -> Tensor:
        outputs = as_float(outputs)
        if self.from_logits:
            return outputs
        return ops.log(ops.clip(outputs, keras.backend.epsilon(), 1.0))

    def old_logits(self, x: Any) -> Tensor:
        """The old model's logits for a batch ``x`` (cached ones when ``x`` carries them)."""
        inputs, cached = _split(x)
        if cached is None:
            if self.old_model is None:
                raise InputError(
                    "CompatibleModel has no old model and the batch carries no cached old "
                    f"logits; pass old_model=, or inputs as {{{INPUTS!r}: x, {OLD_LOGITS!r}: "
                    "old_logits}."
                )
            cached = self.old_model(inputs, training=False)
        return ops.stop_gradient(self._to_logits(cached))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Tensor:
        """The objective for one batch; also updates the part trackers and the flip metrics."""
        if y is None:
            raise InputError("CompatibleModel needs labels y (class indices) to compute its loss.")
        new_logits = self._to_logits(y_pred)
        labels = ops.convert_to_tensor(y)
        shape = static_shape(labels)
        if len(shape) == 2 and shape[1] == 1:
            labels = ops.reshape(labels, (-1,))
        elif len(shape) != 1:
            raise MismatchError(
                f"y has shape {shape}; expected class indices [N] or [N, 1] (convert one-hot "
                "labels with argmax over the classes)."
            )
        old_logits = None
        if self.objective.needs_old or self.flip_metrics:
            old_logits = self.old_logits(x)
        if sample_weight is not None:
            sample_weight = ops.reshape(ops.convert_to_tensor(sample_weight), (-1,))
        total, parts = self.objective(
            new_logits, labels, old_logits, sample_weight, class_mask=self.class_mask
        )
        batch = ops.cast(ops.shape(new_logits)[0], "float32")
        for tracker in self.part_trackers:
            tracker.update_state(parts[tracker.name], sample_weight=batch)
        if self.flip_metrics:
            counts = outcome_counts(labels, new_logits, old_logits)
            for metric in self.flip_metrics:
                metric.add_counts(counts)
        for loss in self.losses:  # regularisers and add_loss of the layers
            total = total + ops.cast(ops.sum(loss), total.dtype)
        return total

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            {
                "new_model": serialize(self.new_model),
                "old_model": None if self.old_model is None else serialize(self.old_model),
                "objective": self.objective.get_config(),
                "from_logits": self.from_logits,
                "class_mask": None if self.class_mask is None else self.class_mask.tolist(),
                "flip_metrics": self.with_flip_metrics,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> CompatibleModel:
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        new_model = deserialize(config.pop("new_model"), custom_objects=custom_objects)
        old_config = config.pop("old_model")
        old_model = (
            None if old_config is None else deserialize(old_config, custom_objects=custom_objects)
        )
        objective = CompatibilityLoss.from_config(config.pop("objective"))
        return cls(new_model, old_model, objective=objective, **config)
