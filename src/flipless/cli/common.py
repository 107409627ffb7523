"""What every ``flipless`` command shares: the consoles, error reporting, options and outputs.

Results go to standard output (``console``); progress and log lines to standard error
(``logs``, silenced by ``--quiet``); errors and warnings to standard error (``errors``, never
silenced). A :class:`~flipless.errors.FliplessError`, or a file the system refuses to read or
write, is printed as one line without a traceback and the command exits with status 2.

The options of ``compare`` and ``gate`` that say how to read two prediction files (columns,
join, class names, slices, top-k, seed) are declared once, in :func:`read_comparison`; the
decorator :func:`comparison_command` gives them to a command, which receives the
:class:`~flipless.metrics.comparison.Comparison` they describe.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flipless import terminal
from flipless.errors import FliplessError
from flipless.metrics.comparison import Comparison

console = terminal.results()
logs = terminal.log()
errors = terminal.problems()

Command = TypeVar("Command", bound=Callable[..., Any])

#: ``--json -``: the JSON document goes to standard output, the human-readable output to
#: standard error.
STDOUT = "-"


def print_error(message: str) -> None:
    """``error: <message>`` on standard error, as one paragraph."""
    errors.print(Text("error: ", style="bold red").append(message), soft_wrap=True)


def reports_errors(command: Command) -> Command:
    """Print a FliplessError's (or a refused file's) message, no traceback, and exit with 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FliplessError as error:
            print_error(str(error))
        except OSError as error:  # a path the system refuses: no such folder, permission, …
            where = f" {error.filename}" if error.filename else ""
            print_error(f"cannot use{where}: {error.strerror or error}. Check the path.")
        raise typer.Exit(2)

    return wrapper  # type: ignore[return-value]


def with_example(text: str) -> Callable[[Command], Command]:
    """Attach an example to a command; ``flipless COMMAND --help`` shows it at the end,
    under "Examples:" unless ``text`` starts with its own "Example…" line.

    Typer joins single line breaks of a help epilog: separate the lines with blank lines.
    """

    shown = text if text.startswith("Example") else f"Examples:\n\n{text}"

    def attach(command: Command) -> Command:
        command.example = shown  # type: ignore[attr-defined]
        return command

    return attach


def human_console(json_out: str | None) -> Console:
    """Where the human-readable output goes: standard error when JSON takes standard output."""
    return errors if json_out == STDOUT else console


def check_json_out(json_out: str | None) -> None:
    """Refuse a ``--json`` path that cannot be written, before any work is done."""
    from flipless import remote
    from flipless.errors import InputError

    if json_out is None or json_out == STDOUT or remote.is_remote(json_out):
        return
    path = Path(json_out).expanduser()
    if path.is_dir():
        raise InputError(f"--json {json_out}: that is a folder; expected a file path, or '-'.")
    if not path.parent.is_dir():
        raise InputError(
            f"--json {json_out}: the folder {path.parent} does not exist; create it first."
        )


def emit_json(document: dict[str, Any], json_out: str) -> None:
    """Write ``document`` to the path ``json_out`` (atomically), or to standard output for ``-``."""
    if json_out == STDOUT:
        sys.stdout.write(json.dumps(document, indent=1, allow_nan=False) + "\n")
        sys.stdout.flush()
        return
    from flipless.metrics.schema import write_json

    write_json(document, json_out)
    logs.print(f"Wrote {json_out}", markup=False, soft_wrap=True)


OldPath = Annotated[  # str, not Path: a URL such as s3://bucket/old.csv must keep its //
    str, typer.Argument(help="Predictions of the old model (csv, parquet, jsonl, npz, .result).")
]
NewPath = Annotated[
    str, typer.Argument(help="Predictions of the new model, joined to the old ones by id.")
]
SliceOption = Annotated[
    list[str] | None,
    typer.Option("--slice", help="A column of group labels to break results down by (repeatable)."),
]
InnerJoin = Annotated[
    bool,
    typer.Option(
        "--inner-join",
        help="Keep only ids present in both files instead of failing on missing ids.",
    ),
]
IdColumn = Annotated[
    str | None, typer.Option("--id-col", help="Column of sample ids (default: detected).")
]
LabelColumn = Annotated[
    str | None, typer.Option("--label-col", help="Column of true labels (default: detected).")
]
PredictionColumn = Annotated[
    str | None, typer.Option("--pred-col", help="Column of predicted labels (default: detected).")
]
ScoreColumns = Annotated[
    str | None,
    typer.Option(
        "--score-cols",
        help="Comma-separated score columns, or one list column (default: detected).",
    ),
]
ClassNames = Annotated[
    str | None,
    typer.Option(
        "--class-names",
        help="Comma-separated class names in index order (default: from the files).",
    ),
]
TopK = Annotated[
    int,
    typer.Option(
        "--top-k", min=1, help="Count a model correct when the label is in its top k scores."
    ),
]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Seed of the bootstrap intervals.")]
JsonOut = Annotated[
    str | None,
    typer.Option(
        "--json",
        help="Also write the result as JSON to this path; '-' writes it to standard output "
        "(and the tables to standard error).",
    ),
]


def read_comparison(
    old: OldPath,
    new: NewPath,
    *,
    slice_columns: SliceOption = None,
    inner_join: InnerJoin = False,
    id_col: IdColumn = None,
    label_col: LabelColumn = None,
    pred_col: PredictionColumn = None,
    score_cols: ScoreColumns = None,
    class_names: ClassNames = None,
    top_k: TopK = 1,
    seed: Seed = 0,
) -> Comparison:
    """The comparison of two prediction files, read as the shared options say."""
    from flipless.io import compare_files

    columns: list[str] | str | None = score_cols
    if score_cols and "," in score_cols:
        columns = split_list(score_cols)
    return compare_files(
        old,
        new,
        slices=slice_columns or (),
        how="inner" if inner_join else "exact",
        top_k=top_k,
        id_column=id_col,
        label_column=label_col,
        prediction_column=pred_col,
        score_columns=columns,
        class_names=split_list(class_names) if class_names else None,
        seed=seed,
    )


def comparison_command(command: Command) -> Command:
    """Give ``command`` the arguments OLD and NEW and the options of :func:`read_comparison`;
    it is called with ``comparison=`` (the files compared) and its own options.

    The command's own parameters come after OLD and NEW in ``--help``, the shared ones last.
    """
    shared = inspect.signature(read_comparison, eval_str=True).parameters
    own = inspect.signature(command, eval_str=True).parameters
    if "comparison" not in own:
        raise TypeError(f"{command.__name__} must take a 'comparison' parameter.")
    positional = [shared["old"], shared["new"]]
    options = [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, parameter in [*own.items(), *shared.items()]
        if name not in ("old", "new", "comparison")
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        reading = {name: values.pop(name) for name in shared if name in values}
        return command(comparison=read_comparison(**reading), **values)

    wrapper.__signature__ = inspect.Signature([*positional, *options])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def split_list(names: str) -> list[str]:
    """The comma-separated items of ``names``, stripped, empty ones dropped."""
    return [name.strip() for name in names.split(",") if name.strip()]


def methods_table(comparisons: dict[str, Comparison]) -> Table:
    """One row per method: test accuracy, its change, negative flips, NFR, PFR, BTC, BEC."""
    table = Table(title="New models against the old one (test split, in %; flips: negative flips)")
    table.add_column("method", no_wrap=True)
    for column in ("acc.", "Δ acc.", "flips", "NFR", "PFR", "BTC", "BEC"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, c in comparisons.items():
        table.add_row(
            Text(name),
            f"{100 * c.accuracy_new:.2f}",
            f"{100 * c.accuracy_delta:+.2f}",
            str(c.negative_flips),
            percent(c.negative_flip_rate),
            percent(c.positive_flip_rate),
            percent(c.backward_trust_compatibility),
            percent(c.backward_error_compatibility),
        )
    first = next(iter(comparisons.values()))
    table.caption = f"old model accuracy {100 * first.accuracy_old:.2f} %"
    return table


def percent(value: float) -> str:
    """A rate in percent with two decimals, or ``n/a`` for NaN."""
    return "n/a" if value != value else f"{100 * value:.2f}"
