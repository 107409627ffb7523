"""Errors and warnings raised by flipless.

Every error says three things: what was expected, what came, and how to fix it. The
command line prints the message (no traceback) and exits with status 2.
"""

from __future__ import annotations


class FliplessError(Exception):
    """Base class of every error flipless raises on purpose."""


class InputError(FliplessError, ValueError):
    """An argument has the wrong shape, type, range or value."""


class MismatchError(InputError):
    """Two inputs that must agree (old and new, predictions and labels) do not."""


class FileFormatError(FliplessError):
    """A file cannot be read: missing, truncated, of the wrong format, or of unexpected content."""


class MissingExtraError(FliplessError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class FliplessWarning(UserWarning):
    """A result is valid but may not be what the user meant."""
