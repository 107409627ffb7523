"""Compatibility losses, flip metrics and a ``.fit()``-able compatible model for Keras 3.

The per-sample terms, focus rules and objective of :mod:`flipless.losses`, written with
``keras.ops`` so that they run on every Keras 3 backend (TensorFlow, JAX, PyTorch), and a
model wrapper whose ``compute_loss`` adds the compatibility objective against a frozen old
model (or cached old logits), so that ``compile()`` / ``fit()`` / ``evaluate()`` train and
measure compatibly::

    from flipless.keras import CompatibleModel
    model = CompatibleModel(new_model, old_model, objective="fd-kl")
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, validation_data=(x_val, y_val))   # logs val_negative_flip_rate, …

Needs the ``[keras]`` extra (``pip install 'flipless[keras]'``) and a Keras backend:
Keras picks it from ``KERAS_BACKEND`` at import time (``torch`` is always installed with
flipless; ``jax`` and ``tensorflow`` work too). See docs/keras.md.
"""

from __future__ import annotations

import importlib.util
import os

from flipless.errors import MissingExtraError

_MINIMUM = (3, 3)  # Trainer.compute_loss(..., training) arrived in Keras 3.3

if importlib.util.find_spec("keras") is None:
    raise MissingExtraError(
        "flipless.keras needs Keras 3, which is not installed; install it with "
        "pip install 'flipless[keras]' and choose a backend with KERAS_BACKEND "
        "(torch, which flipless installs, jax or tensorflow)."
    )
try:
    import keras
except ImportError as error:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow (Keras's default)")
    raise MissingExtraError(
        f"Keras is installed but cannot start its backend {backend}: {error}. Set "
        "KERAS_BACKEND=torch (torch comes with flipless) or jax before importing, or install "
        "that backend (for example pip install tensorflow-cpu)."
    ) from error

_version = tuple(int(part) for part in keras.__version__.split(".")[:2] if part.isdigit())
if _version < _MINIMUM:
    raise MissingExtraError(
        f"flipless.keras needs keras>=3.3; found keras {keras.__version__}. Upgrade it with "
        "pip install 'flipless[keras]'."
    )

from flipless.keras.focus import correct, focus_weights  # noqa: E402
from flipless.keras.metrics import (  # noqa: E402
    BackwardErrorCompatibility,
    BackwardTrustCompatibility,
    NegativeFlipRate,
    PositiveFlipRate,
)
from flipless.keras.model import CompatibleModel  # noqa: E402
from flipless.keras.objective import TERMS, CompatibilityLoss, build_loss  # noqa: E402

__all__ = [
    "TERMS",
    "BackwardErrorCompatibility",
    "BackwardTrustCompatibility",
    "CompatibilityLoss",
    "CompatibleModel",
    "NegativeFlipRate",
    "PositiveFlipRate",
    "build_loss",
    "correct",
    "focus_weights",
]
