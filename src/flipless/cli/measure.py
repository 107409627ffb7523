"""``flipless compare`` and ``flipless gate``: two prediction files, joined by id."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from flipless.cli.common import (
    STDOUT,
    JsonOut,
    check_json_out,
    comparison_command,
    emit_json,
    human_console,
    logs,
    reports_errors,
    with_example,
)
from flipless.metrics.comparison import Comparison
from flipless.metrics.display import group_table, regressions_table, summary_table

COMPARE_EXAMPLE = """Examples:

  flipless compare old.csv new.csv --slice region --json comparison.json

  flipless compare old.parquet new.parquet --json c.json --instances c.parquet

  flipless compare old.parquet new.parquet --json - | jq .counts
"""
GATE_EXAMPLE = """Example (exit 0: pass, 1: a rule is violated, 2: bad input):

  flipless gate old.csv new.csv --max-nfr 0.01 --max-slice-nfr 0.05 --slice region
"""


def show_comparison(
    comparison: Comparison, top_flips: int, out: Console, class_limit: int = 15
) -> None:
    """Print the summary, the per-class and per-slice views and the biggest regressions."""
    out.print(summary_table(comparison))
    out.print(
        group_table(
            comparison.per_class(), "Per true class (most negative flips first)", class_limit
        )
    )
    for name in comparison.slices:
        out.print(group_table(comparison.per_slice(name), f"Per slice: {name}"))
    if top_flips > 0 and comparison.instances is not None and comparison.negative_flips:
        out.print(regressions_table(comparison.top_regressions(top_flips)))


@with_example(COMPARE_EXAMPLE)
@reports_errors
@comparison_command
def compare(
    comparison: Comparison,
    json_out: JsonOut = None,
    top_flips: Annotated[
        int, typer.Option("--top-flips", min=0, help="How many regressions to list (0: none).")
    ] = 10,
    instances_out: Annotated[
        str | None,
        typer.Option(
            "--instances",
            help="Also write every sample's outcome (id, label, both answers, flip flags) to "
            "this Parquet file; the JSON names it and flipless report reads it.",
        ),
    ] = None,
) -> None:
    """Compare two models' predictions: flip rates, per class, per slice, biggest regressions.

    The JSON is a summary (counts, rates, per class, per slice, the top regressions); the
    outcome of every sample goes to the --instances file, only when asked for.
    """
    from flipless.metrics.instance_file import write_instances
    from flipless.metrics.schema import comparison_to_dict, recorded_path

    check_json_out(json_out)
    show_comparison(comparison, top_flips, human_console(json_out))
    if instances_out is not None:  # compare_files keeps every sample's outcome
        write_instances(comparison.instances, instances_out)
        logs.print(f"Wrote {instances_out}", markup=False, soft_wrap=True)
    if json_out is not None:
        document = comparison_to_dict(comparison, instances=False, top_regressions=top_flips)
        if instances_out is not None:
            document["instances_file"] = recorded_path(
                instances_out, None if json_out == STDOUT else json_out
            )
        emit_json(document, json_out)


@with_example(GATE_EXAMPLE)
@reports_errors
@comparison_command
def gate(
    comparison: Comparison,
    max_nfr: Annotated[
        float | None,
        typer.Option("--max-nfr", help="Largest allowed NFR (0.02 = 2 %)."),
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
        int,
        typer.Option("--min-slice-size", min=1, help="Skip slice groups with fewer samples."),
    ] = 1,
    min_accuracy_gain: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy-gain",
            help="Smallest required accuracy gain (negative: allowed loss).",
        ),
    ] = None,
    significance: Annotated[
        float | None,
        typer.Option(
            "--significance",
            help="Fail on a regression significant at this level (McNemar), in (0, 1).",
        ),
    ] = None,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            help="Write the verdict as JSON to this path; '-' writes it to standard output "
            "(and the verdict lines to standard error).",
        ),
    ] = None,
) -> None:
    """Exit 0 when the update passes every rule, 1 with one line per violated rule."""
    from flipless.gate import evaluate_gate

    check_json_out(json_out)
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
        emit_json(verdict.to_dict() | {"comparison": comparison.to_dict(instances=False)}, json_out)
    out = human_console(json_out)
    for check in verdict.violations:
        out.print(
            f"FAIL {check.rule} [{check.scope}]: {check.detail}", markup=False, soft_wrap=True
        )
    for skipped in verdict.skipped:
        out.print(f"skip {skipped}", markup=False, style="dim", soft_wrap=True)
    if not verdict.passed:
        raise typer.Exit(1)
    out.print(f"PASS: {len(verdict.checks)} check(s) hold.")
