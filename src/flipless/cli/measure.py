"""``flipless compare`` and ``flipless gate``: two prediction files, joined by id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flipless.cli.common import (
    ClassNames,
    IdColumn,
    InnerJoin,
    JsonOut,
    LabelColumn,
    NewPath,
    OldPath,
    PredictionColumn,
    ScoreColumns,
    Seed,
    SliceOption,
    TopK,
    console,
    read_comparison,
    reports_errors,
)
from flipless.metrics.comparison import Comparison
from flipless.metrics.display import group_table, regressions_table, summary_table


def show_comparison(comparison: Comparison, top_flips: int, class_limit: int = 15) -> None:
    """Print the summary, the per-class and per-slice views and the biggest regressions."""
    console.print(summary_table(comparison))
    console.print(
        group_table(
            comparison.per_class(), "Per true class (most negative flips first)", class_limit
        )
    )
    for name in comparison.slices:
        console.print(group_table(comparison.per_slice(name), f"Per slice: {name}"))
    if top_flips > 0 and comparison.instances is not None and comparison.negative_flips:
        console.print(regressions_table(comparison.top_regressions(top_flips)))


@reports_errors
def compare(
    old: OldPath,
    new: NewPath,
    slice_columns: SliceOption = None,
    json_out: JsonOut = None,
    top_flips: Annotated[
        int, typer.Option("--top-flips", help="How many regressions to list.")
    ] = 10,
    inner_join: InnerJoin = False,
    id_col: IdColumn = None,
    label_col: LabelColumn = None,
    pred_col: PredictionColumn = None,
    score_cols: ScoreColumns = None,
    class_names: ClassNames = None,
    top_k: TopK = 1,
    seed: Seed = 0,
) -> None:
    """Compare two models' predictions: flip rates, per class, per slice, biggest regressions."""
    comparison = read_comparison(
        old,
        new,
        slice_columns,
        inner_join,
        id_col,
        label_col,
        pred_col,
        score_cols,
        class_names,
        top_k,
        seed,
    )
    show_comparison(comparison, top_flips)
    if json_out is not None:
        comparison.to_json(str(json_out))
        console.print(f"Wrote {json_out}")


@reports_errors
def gate(
    old: OldPath,
    new: NewPath,
    max_nfr: Annotated[
        float | None, typer.Option("--max-nfr", help="Largest allowed NFR (0.02 = 2 %).")
    ] = None,
    max_class_nfr: Annotated[
        float | None,
        typer.Option("--max-class-nfr", help="Largest allowed NFR within any true class."),
    ] = None,
    max_slice_nfr: Annotated[
        float | None,
        typer.Option("--max-slice-nfr", help="Largest allowed NFR within any slice group."),
    ] = None,
    min_slice_size: Annotated[
        int, typer.Option("--min-slice-size", help="Skip slice groups with fewer samples.")
    ] = 1,
    min_accuracy_gain: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy-gain", help="Smallest required accuracy gain (negative: allowed loss)."
        ),
    ] = None,
    significance: Annotated[
        float | None,
        typer.Option(
            "--significance", help="Fail on a regression significant at this level (McNemar)."
        ),
    ] = None,
    slice_columns: SliceOption = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the verdict as JSON to this path.")
    ] = None,
    inner_join: InnerJoin = False,
    id_col: IdColumn = None,
    label_col: LabelColumn = None,
    pred_col: PredictionColumn = None,
    score_cols: ScoreColumns = None,
    class_names: ClassNames = None,
    top_k: TopK = 1,
    seed: Seed = 0,
) -> None:
    """Exit 0 when the update passes every rule, 1 with one line per violated rule."""
    from flipless.gate import evaluate_gate
    from flipless.metrics.schema import write_json

    comparison = read_comparison(
        old,
        new,
        slice_columns,
        inner_join,
        id_col,
        label_col,
        pred_col,
        score_cols,
        class_names,
        top_k,
        seed,
    )
    verdict = evaluate_gate(
        comparison,
        max_nfr=max_nfr,
        max_class_nfr=max_class_nfr,
        max_slice_nfr=max_slice_nfr,
        min_slice_size=min_slice_size,
        min_accuracy_gain=min_accuracy_gain,
        significance=significance,
    )
    if json_out is not None:
        write_json(
            verdict.to_dict() | {"comparison": comparison.to_dict(instances=False)}, json_out
        )
    for check in verdict.violations:
        console.print(
            f"FAIL {check.rule} [{check.scope}]: {check.detail}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for skipped in verdict.skipped:
        console.print(f"skip {skipped}", markup=False, highlight=False, style="dim", soft_wrap=True)
    if not verdict.passed:
        raise typer.Exit(1)
    console.print(f"PASS: {len(verdict.checks)} check(s) hold.", highlight=False)
