"""BackwardCompatibilityML's TensorFlow names on flipless.keras, with the corrected numbers.

Microsoft's BackwardCompatibilityML (BCML; Srivastava et al., KDD 2020) ships TensorFlow
losses ``Loss(h1, h2, lambda_c)`` called as ``loss(x, y)`` (h1: the old, reference model;
h2: the new model) and a Keras model class ``BCNewErrorCompatibilityModel`` whose
``train_step`` adds the new-error term so that ``fit()`` trains compatibly. Here they are thin
aliases of :class:`flipless.keras.CompatibilityLoss` and :class:`flipless.keras.CompatibleModel`:

    loss(x, y) = (1/N) Σ_i [ CE(z_n,i, y_i) + λ_c · S_i · dissonance_i ],   S_i = 1[h1 right on i]

========================================  ===================================================
name                                      dissonance_i (ours)
========================================  ===================================================
``BCNewErrorCompatibilityModel``          CE(z_n,i, y_i): new error, trained by ``fit()``
``BCCrossEntropyLoss``, ``BCNLLLoss``,    CE(z_n,i, y_i) (KL(one-hot(y) ‖ p) is the same
``BCKLDivLoss``                           number)
``BCStrictImitationCrossEntropyLoss``,    −Σ_k p_k(z_o) log p_k(z_n): soft cross-entropy to
``BCStrictImitationNLLLoss``              h1's probabilities
``BCStrictImitationKLDivLoss``            KL(p(z_o) ‖ p(z_n))
========================================  ===================================================

Where the published TensorFlow code differs (docs/keras.md has the details):

* every loss class sums over the batch (the model class averages), so λ_c and the learning
  rate mean something different for every batch size; here every class takes the batch mean;
* ``BCNLLLoss`` gathers p_i[y_j] for every pair (i, j) of the batch (an [N, N] matrix) and
  averages its logarithm: not the negative log-likelihood;
* the strict-imitation classes never look at h1's outputs beyond choosing S: their dissonance
  is a binary log loss of h2's probabilities against the one-hot labels; here it imitates
  h1's probabilities, as strict imitation means;
* h2 runs twice per step (on x and on the support); here once, and h1 once, with
  ``training=False`` and without gradient;
* ``BCNewErrorCompatibilityModel`` divides the dissonance by |S| (the compiled loss averaged
  over the support), computes its metrics with another forward pass after the update,
  cannot take sample weights, and its ``evaluate`` leaves the dissonance out; here the
  dissonance is divided by N, metrics come from the training step, sample and class
  weights apply, and ``evaluate`` reports the same objective and the flip metrics.

The binary classes (``BCBinaryCrossEntropyLoss``, ``BCStrictImitationBinaryCrossEntropyLoss``)
are not provided: flipless.keras has no sigmoid terms (flipless.losses.bcml has them).
Models end in a softmax in BCML's examples, so outputs are read as probabilities unless
``from_logits=True``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
from keras import ops

from flipless.errors import FliplessWarning, InputError, MismatchError
from flipless.keras.model import CompatibleModel, _check_model
from flipless.keras.objective import CompatibilityLoss
from flipless.keras.terms import Tensor, as_float, as_labels, static_shape
from flipless.losses.objective import Term

__all__ = [
    "BCCrossEntropyLoss",
    "BCKLDivLoss",
    "BCNLLLoss",
    "BCNewErrorCompatibilityModel",
    "BCStrictImitationCrossEntropyLoss",
    "BCStrictImitationKLDivLoss",
    "BCStrictImitationNLLLoss",
]


def _check_lambda(lambda_c: Any) -> float:
    ok = isinstance(lambda_c, numbers.Real) and not isinstance(lambda_c, bool)
    if not ok or not math.isfinite(lambda_c) or lambda_c < 0:
        raise InputError(
            f"lambda_c={lambda_c!r}; expected a finite number ≥ 0 (BackwardCompatibilityML "
            "documents [0, 1]). Pass for example lambda_c=0.5."
        )
    return float(lambda_c)


def _dissonance(kind: str, lambda_c: float) -> CompatibilityLoss:
    """CE + λ_c · (1/N) Σ_i S_i ℓ_i: the term on the samples the old model gets right."""
    term = Term(kind, focus="old_correct", base=0.0, boost=1.0, weight=lambda_c)
    return CompatibilityLoss([term])


def _logits(outputs: Tensor, from_logits: bool) -> Tensor:
    outputs = as_float(outputs)
    if from_logits:
        return outputs
    return ops.log(ops.clip(outputs, keras.backend.epsilon(), 1.0))


def _class_indices(y: Tensor, classes: int | None) -> Tensor:
    """Class indices [N] from sparse labels [N] / [N, 1] or one-hot labels [N, C]."""
    y = ops.convert_to_tensor(y)
    shape = static_shape(y)
    if len(shape) == 2 and shape[1] == 1:
        return as_labels(ops.reshape(y, (-1,)))
    if len(shape) == 2 and shape[1] == classes:
        return ops.cast(ops.argmax(y, axis=1), "int32")
    if len(shape) == 1:
        return as_labels(y)
    raise MismatchError(
        f"y has shape {shape} for {classes} output classes; expected class indices [N] or "
        f"one-hot labels [N, {classes}]."
    )


class _BCMLLoss:
    """loss(x, y) = mean over the batch of CE_i + lambda_c · S_i · dissonance_i."""

    kind: ClassVar[str]

    def __init__(
        self,
        h1: keras.layers.Layer,
        h2: keras.layers.Layer,
        lambda_c: float,
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_model(h1, "h1 (the old model)")
        _check_model(h2, "h2 (the new model)")
        if h1 is h2:
            raise InputError(
                "h1 and h2 are the same model; expected the old model as h1 and a separate new "
                "model as h2 (clone it first with keras.models.clone_model to fine-tune it)."
            )
        if kwargs:
            warnings.warn(
                f"{type(self).__name__} ignores the keyword arguments {sorted(kwargs)} "
                "(BackwardCompatibilityML's clipping bounds have no use with log-softmax).",
                FliplessWarning,
                stacklevel=2,
            )
        self.h1, self.h2 = h1, h2
        self.lambda_c = _check_lambda(lambda_c)
        self.from_logits = bool(from_logits)
        self.__name__ = type(self).__name__
        self.objective = _dissonance(self.kind, self.lambda_c)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Run h2 (``training=True``) and h1 (``training=False``) once each; the batch mean."""
        new_logits = _logits(self.h2(x, training=True), self.from_logits)
        old_logits = ops.stop_gradient(_logits(self.h1(x, training=False), self.from_logits))
        labels = _class_indices(y, static_shape(new_logits)[1])
        total, _ = self.objective(new_logits, labels, old_logits)
        return total


class BCCrossEntropyLoss(_BCMLLoss):
    """New error, cross-entropy: CE_i + λ_c · S_i · CE_i, averaged over the batch.

    BCML's TensorFlow class returns the batch sum of both parts: N times this value.
    """

    kind = "new_error"


class BCNLLLoss(_BCMLLoss):
    """New error, negative log-likelihood: −log p_{y_i} + λ_c · S_i · (−log p_{y_i}), mean.

    BCML's TensorFlow class averages log p_i[y_j] over every pair (i, j) of the batch (an
    [N, N] gather) instead of the pairs (i, y_i).
    """

    kind = "new_error"


class BCKLDivLoss(_BCMLLoss):
    """New error, KL to the one-hot labels (= cross-entropy): CE_i + λ_c · S_i · CE_i, mean.

    BCML's TensorFlow class returns the batch sum: N times this value.
    """

    kind = "new_error"


class BCStrictImitationCrossEntropyLoss(_BCMLLoss):
    """Strict imitation: CE_i + λ_c · S_i · (−Σ_k p_k(z_o) log p_k(z_n)), mean.

    BCML's TensorFlow class compares h2 with the labels, not with h1, on the support.
    """

    kind = "strict_imitation"


class BCStrictImitationNLLLoss(_BCMLLoss):
    """Strict imitation with the NLL base: the same numbers as the cross-entropy class."""

    kind = "strict_imitation"


class BCStrictImitationKLDivLoss(_BCMLLoss):
    """Strict imitation, KL: CE_i + λ_c · S_i · KL(p(z_o) ‖ p(z_n)), mean."""

    kind = "kl"


def _from_logits_of(loss: Any) -> bool:
    """The ``from_logits`` a compiled sparse categorical cross-entropy asks for."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return bool(loss.from_logits)
    if loss == "sparse_categorical_crossentropy" or (
        loss is keras.losses.sparse_categorical_crossentropy
    ):
        return False  # Keras's default: the model outputs probabilities
    raise InputError(
        "BCNewErrorCompatibilityModel trains with the sparse categorical cross-entropy (its "
        f"dissonance is the same loss on the samples h1 gets right); got loss={loss!r}. Pass "
        "loss='sparse_categorical_crossentropy', a keras.losses.SparseCategoricalCrossentropy, "
        "or leave it out."
    )


@keras.saving.register_keras_serializable(package="flipless")
class BCNewErrorCompatibilityModel(CompatibleModel):
    """BCML's Keras model: ``fit()`` trains the new model with the new-error loss against h1.

        h2 = BCNewErrorCompatibilityModel([keras.Input((64,)), keras.layers.Dense(128, "relu"),
                                           keras.layers.Dense(10, "softmax")],
                                          h1=h1, lambda_c=0.7)
        h2.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])
        h2.fit(x, y, epochs=6, validation_data=(x_test, y_test))

    The loss is CE + lambda_c · (1/N) Σ_{i: h1 right} CE_i (BCML divides that sum by the
    number of samples h1 gets right). ``layers`` is the list BCML passed to ``Sequential``,
    or any Keras model. ``compile``'s ``loss``, when given, must be the sparse categorical
    cross-entropy; its ``from_logits`` says how the outputs are read (probabilities by
    default, as in BCML). ``lambda_c`` is fixed once built: build a new model to change it.
    """

    def __init__(
        self,
        layers: Sequence[keras.layers.Layer] | keras.layers.Layer | None = None,
        h1: keras.layers.Layer | None = None,
        lambda_c: float = 0.0,
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        if h1 is None:
            raise InputError(
                "h1 (the old model this model must stay compatible with) is required: "
                "BCNewErrorCompatibilityModel(layers, h1=old_model, lambda_c=0.5)."
            )
        if layers is None:
            raise InputError("layers is required: the new model's layers, or a Keras model.")
        weight = _check_lambda(lambda_c)
        new_model = layers if isinstance(layers, keras.layers.Layer) else keras.Sequential(layers)
        super().__init__(
            new_model,
            h1,
            objective=_dissonance("new_error", weight),
            from_logits=from_logits,
            **kwargs,
        )
        self._lambda_c = weight

    @property
    def h1(self) -> keras.layers.Layer:
        """The old model (BCML's name)."""
        return self.old_model

    @property
    def lambda_c(self) -> float:
        """The weight of the dissonance."""
        return self._lambda_c

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, **kwargs: Any) -> None:
        """Keras's ``compile``; ``loss`` may only be the sparse categorical cross-entropy."""
        if loss is not None:
            self.from_logits = _from_logits_of(loss)
        super().compile(optimizer=optimizer, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("objective", "class_mask", "flip_metrics"):
            config.pop(key)
        config["layers"] = config.pop("new_model")
        config["h1"] = config.pop("old_model")
        config["lambda_c"] = self.lambda_c
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> BCNewErrorCompatibilityModel:
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        layers = deserialize(config.pop("layers"), custom_objects=custom_objects)
        h1 = deserialize(config.pop("h1"), custom_objects=custom_objects)
        return cls(layers, h1=h1, **config)
