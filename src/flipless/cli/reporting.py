"""``flipless report``: the interactive HTML report of a comparison or a sweep."""

from __future__ import annotations

from typing import Annotated

import typer

from flipless.cli.common import console, reports_errors, with_example


@with_example(
    "flipless compare old.csv new.csv --json comparison.json\n\n"
    "flipless report comparison.json --out report.html\n\n"
    "flipless report runs/sweep/results.jsonl --out sweep.html --title 'fd-kl sweep'"
)
@reports_errors
def report(
    source: Annotated[
        str,  # not Path: a URL (s3://bucket/results.jsonl) must keep its //
        typer.Argument(
            help="A comparison JSON (flipless compare --json) or a sweep results store "
            "(.jsonl / .parquet); a path or a URL."
        ),
    ],
    out: Annotated[
        str, typer.Option("--out", help="The HTML file to write (a path or a URL).")
    ] = "report.html",
    title: Annotated[str | None, typer.Option("--title", help="The report's title.")] = None,
    max_instances_per_point: Annotated[
        int,
        typer.Option(
            "--max-instances-per-point",
            help="Rows embedded per run of a sweep (flips and errors first).",
        ),
    ] = 10_000,
    instances: Annotated[
        str | None,
        typer.Option(
            "--instances",
            help="The instances file of a comparison JSON (flipless compare --instances), "
            "when it is not where the JSON says.",
        ),
    ] = None,
) -> None:
    """Write the interactive HTML report of a comparison or a sweep (one self-contained file)."""
    from flipless import remote
    from flipless.report import write_report

    written = write_report(
        source,
        out,
        title=title,
        max_instances_per_point=max_instances_per_point,
        instances=instances,
    )
    size = remote.size(written) / 2**20
    console.print(
        f"Wrote {written} ({size:.1f} MiB); open it in a browser.", highlight=False, soft_wrap=True
    )
