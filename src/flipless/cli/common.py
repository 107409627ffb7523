"""What every ``flipless`` command shares: the consoles, error reporting and file options.

Results go to standard output (``console``); progress, logs and errors to standard error
(``errors``). A :class:`~flipless.errors.FliplessError` is printed without a traceback and the
command exits with status 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flipless.errors import FliplessError
from flipless.metrics.comparison import Comparison

console = Console()
errors = Console(stderr=True)

Command = TypeVar("Command", bound=Callable[..., Any])


def reports_errors(command: Command) -> Command:
    """Print a FliplessError's message (no traceback) and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FliplessError as error:
            errors.print(Text("error: ", style="bold red").append(str(error)), soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


OldPath = Annotated[
    Path, typer.Argument(help="Predictions of the old model (csv, parquet, jsonl, npz, .result).")
]
NewPath = Annotated[
    Path, typer.Argument(help="Predictions of the new model, joined to the old ones by id.")
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
    int, typer.Option("--top-k", help="Count a model correct when the label is in its top k.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap intervals.")]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Also write the result as JSON to this path.")
]


def read_comparison(
    old: Path,
    new: Path,
    slices: list[str] | None,
    inner_join: bool,
    id_col: str | None,
    label_col: str | None,
    pred_col: str | None,
    score_cols: str | None,
    class_names: str | None,
    top_k: int,
    seed: int,
) -> Comparison:
    from flipless.io import compare_files

    columns: list[str] | str | None = score_cols
    if score_cols and "," in score_cols:
        columns = split_list(score_cols)
    return compare_files(
        old,
        new,
        slices=slices or (),
        how="inner" if inner_join else "exact",
        top_k=top_k,
        id_column=id_col,
        label_column=label_col,
        prediction_column=pred_col,
        score_columns=columns,
        class_names=split_list(class_names) if class_names else None,
        seed=seed,
    )


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
