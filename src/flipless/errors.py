"""Errors and warnings raised by flipless.

Every error says three things: what was expected, what came, and how to fix it. The
command line prints the message (no traceback) and exits with status 2.

Each error is also the built-in exception a Python user would catch for it, so that code
written without flipless in mind still works: an :class:`InputError` is a ``ValueError``, a
:class:`FileFormatError` a ``ValueError`` (the content is wrong), a :class:`MissingFileError`
a ``FileNotFoundError`` (so ``except OSError`` catches it) and a :class:`MissingExtraError`
an ``ImportError``.
"""

from __future__ import annotations


class FliplessError(Exception):
    """Base class of every error flipless raises on purpose."""


class InputError(FliplessError, ValueError):
    """An argument has the wrong shape, type, range or value."""


class MismatchError(InputError):
    """Two inputs that must agree (old and new, predictions and labels) do not."""


class FileFormatError(FliplessError, ValueError):
    """A file cannot be read: missing, truncated, of the wrong format, or of unexpected content."""


class MissingFileError(FileFormatError, FileNotFoundError):
    """A file or folder that should be read does not exist (also a ``FileNotFoundError``)."""


class MissingExtraError(FliplessError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class FliplessWarning(UserWarning):
    """A result is valid but may not be what the user meant."""
