"""The ``flipless`` command: measure, gate, train, merge, sweep and report model updates.

Each command lives in a module of its own; this module builds the Typer application from them.
Errors that flipless raises on purpose (:class:`~flipless.errors.FliplessError`) are printed
without a traceback and exit with status 2; ``gate`` exits 1 when a rule is violated.

Options of every command: ``-h`` / ``--help``. Of ``flipless`` itself: ``--version`` and
``--quiet`` (no progress bars and no log lines; results and errors still show). Warnings are
printed as one line, ``warning: <message>``, on standard error. ``NO_COLOR`` turns every style
off (see :mod:`flipless.terminal`).
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, Any

import typer
import typer.rich_utils

from flipless import terminal
from flipless._version import __version__
from flipless.cli.common import console, errors
from flipless.cli.measure import compare, gate
from flipless.cli.merging import interpolate
from flipless.cli.predicting import ensemble, predict
from flipless.cli.reporting import report
from flipless.cli.training import demo, sweep, train

if not terminal.styles_wanted():
    typer.rich_utils.COLOR_SYSTEM = None  # Typer's own help and usage panels: no style either

app = typer.Typer(
    name="flipless",
    help="Measure, gate and reduce what a model update breaks (negative flips).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for command in (compare, gate, predict, ensemble, demo, train, interpolate, sweep, report):
    app.command(epilog=getattr(command, "example", None))(command)


def version_text() -> str:
    return f"flipless {__version__} (Python {sys.version.split()[0]})"


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warning: <message>`` on one line of standard error (no source file, no source line)."""
    text = " ".join(str(message).split())
    errors.print(f"warning: {text}", markup=False, soft_wrap=True, style="yellow")


def print_version(value: bool) -> None:
    if value:
        console.print(version_text(), markup=False)
        raise typer.Exit()


@app.callback()
def main(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bars or log lines; results and errors still show."
        ),
    ] = False,
    version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=print_version,
            is_eager=True,
            help="Print the flipless version and exit.",
        ),
    ] = False,
) -> None:
    """Measure, gate and reduce what a model update breaks (negative flips)."""
    terminal.set_quiet(quiet)
    warnings.showwarning = show_warning


@app.command()
def version() -> None:
    """Print the flipless version."""
    console.print(version_text(), markup=False)


__all__ = [
    "app",
    "compare",
    "demo",
    "ensemble",
    "gate",
    "interpolate",
    "predict",
    "report",
    "sweep",
    "train",
]
