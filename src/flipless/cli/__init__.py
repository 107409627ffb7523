"""The ``flipless`` command: measure, gate, train, merge, sweep and report model updates.

Each command lives in a module of its own; this module builds the Typer application from them.
Errors that flipless raises on purpose (:class:`~flipless.errors.FliplessError`) are printed
without a traceback and exit with status 2; ``gate`` exits 1 when a rule is violated.
"""

from __future__ import annotations

import sys

import typer

from flipless._version import __version__
from flipless.cli.common import console
from flipless.cli.measure import compare, gate
from flipless.cli.merging import interpolate
from flipless.cli.reporting import report
from flipless.cli.training import demo, sweep, train

app = typer.Typer(
    name="flipless",
    help="Measure, gate and reduce what a model update breaks (negative flips).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for command in (compare, gate, demo, train, interpolate, sweep, report):
    app.command()(command)


@app.command()
def version() -> None:
    """Print the flipless version."""
    console.print(f"flipless {__version__} (Python {sys.version.split()[0]})")


__all__ = ["app", "compare", "demo", "gate", "interpolate", "report", "sweep", "train"]
