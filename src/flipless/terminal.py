"""Where flipless writes on a terminal: results on standard output, the rest on standard error.

``results()`` is the console of results (tables, verdicts, JSON); ``log()`` the console of
progress bars and log lines, on standard error, silenced by :func:`set_quiet`; ``problems()``
the console of errors and warnings, on standard error and never silenced. Piping a command's
standard output (``flipless compare … --json - | jq``) thus gets the results alone.

``NO_COLOR`` (https://no-color.org) set to anything but the empty string removes every
style, bold and dim included: rich's own ``no_color`` drops colours only, so the consoles are
made without a colour system (rich then writes no escape sequence at all).
"""

from __future__ import annotations

import os
from functools import cache

from rich.console import Console


def styles_wanted() -> bool:
    """False when the ``NO_COLOR`` environment variable is set and not empty."""
    return not os.environ.get("NO_COLOR")


def make_console(*, stderr: bool) -> Console:
    """A console on standard output or error that honours ``NO_COLOR`` (no style at all)."""
    if styles_wanted():
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, color_system=None, no_color=True)


@cache
def results() -> Console:
    """The console of results: standard output."""
    return make_console(stderr=False)


@cache
def log() -> Console:
    """The console of progress and log lines: standard error; :func:`set_quiet` silences it."""
    return make_console(stderr=True)


@cache
def problems() -> Console:
    """The console of errors and warnings: standard error, never silenced."""
    return make_console(stderr=True)


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) progress bars and log lines; results and errors still show."""
    log().quiet = quiet
