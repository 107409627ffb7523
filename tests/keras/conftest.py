"""Keras picks its backend when first imported: the tests in this process run on torch.

torch always comes with flipless (Keras's own default, tensorflow, is not installed by the
``[keras]`` extra), and some tests use torch.autograd on the backend's tensors.
``test_backends.py`` runs the checks on every installed backend, each in its own process.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"


def pytest_configure(config) -> None:
    # Keras's torch backend converts tensors with np.array(tensor, copy=False), which torch's
    # __array__ answers with this NumPy 2 deprecation notice on every conversion.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    )
