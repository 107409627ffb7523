"""``flipless train``, ``flipless sweep`` and ``flipless demo``: compatible updates run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from flipless.cli.common import console, logs, methods_table, reports_errors, with_example
from flipless.metrics.display import regressions_table

TRAIN_EXAMPLE = """Example:

  flipless train run.toml --progress log 2> train.log
"""
SWEEP_EXAMPLE = """Example (a rerun resumes: only missing points run):

  flipless sweep examples/sweep-digits.toml --workers 2
"""
DEMO_EXAMPLE = """Example:

  flipless demo --out flipless-demo 2> demo.log
"""


@with_example(TRAIN_EXAMPLE)
@reports_errors
def train(
    config: Annotated[  # str, not Path: a URL (s3://bucket/run.toml) must keep its //
        str, typer.Argument(help="A TOML or YAML run configuration (a path or a URL).")
    ],
    progress: Annotated[
        str | None, typer.Option("--progress", help="bar, log or none (overrides the config).")
    ] = None,
) -> None:
    """Train a new model compatibly as CONFIG says; measure it against the old one on test."""
    import dataclasses

    from flipless.train.config import load_config
    from flipless.train.recipe import run_config

    run = load_config(config)
    if progress is not None:
        from flipless.errors import InputError
        from flipless.train.settings import PROGRESS_MODES, TrainSettings

        if progress not in PROGRESS_MODES:
            raise InputError(
                f"--progress {progress!r}; expected one of {', '.join(PROGRESS_MODES)}."
            )

        run = dataclasses.replace(
            run, train=TrainSettings(**{**dataclasses.asdict(run.train), "progress": progress})
        )
    outcome = run_config(run)
    console.print(methods_table({run.loss.preset: outcome.test_comparison}))
    console.print(
        f"kept epoch {outcome.result.kept_epoch} by rule {outcome.result.rule!r} on "
        f"validation; files in {outcome.output_dir}"
    )


@with_example(SWEEP_EXAMPLE)
@reports_errors
def sweep(
    config: Annotated[
        str, typer.Argument(help="A TOML or YAML sweep configuration (a path or a URL).")
    ],
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local worker processes (overrides the config).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="local or ray (overrides the config).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="The results file, .jsonl or .parquet, a path or a URL (overrides the config).",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="No progress; print only the final table.")
    ] = False,
    force_new_store: Annotated[
        bool,
        typer.Option(
            "--force-new-store",
            help="Move an existing store and its files aside (replaced-<time>/) and start anew.",
        ),
    ] = False,
) -> None:
    """Run a grid of compatible updates (method × strength × seed); a rerun resumes it."""
    from flipless.sweep.config import load_sweep_config, with_overrides
    from flipless.sweep.display import front_table
    from flipless.sweep.pareto import select_point
    from flipless.sweep.runner import run_sweep

    settings = with_overrides(
        load_sweep_config(config), workers=workers, backend=backend, store=store
    )
    outcome = run_sweep(
        settings, quiet=quiet or logs.quiet, new_store=force_new_store, console=logs
    )
    if outcome.moved_to is not None:
        logs.print(f"The previous store and its files are in {outcome.moved_to}.", markup=False)
    console.print(front_table(outcome.records))
    selection = select_point(outcome.records, settings.select)
    console.print(Text(f"Chosen on dev by {selection.rule}: {selection.reason}"))
    console.print(
        f"{len(outcome.ran)} point(s) run now, {len(outcome.skipped)} found in {outcome.store}.",
        highlight=False,
        soft_wrap=True,
    )


@with_example(DEMO_EXAMPLE)
@reports_errors
def demo(
    seed: Annotated[int, typer.Option("--seed", help="Seed of data splits and training.")] = 0,
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for the comparisons, the summary and the report."),
    ] = Path("flipless-demo"),
    top_flips: Annotated[
        int,
        typer.Option(
            "--top-flips", min=0, help="How many regressions of the plain update to list."
        ),
    ] = 5,
) -> None:
    """Train an old digit classifier and five updates of it; compare, gate and report them.

    The updates: plain, fd-kl, ldi, the old model fine-tuned, and bcwi (interpolated back).
    Each is compared with the old model on test and gated.
    The comparisons, a summary (JSON) and the HTML report are written to --out.
    Progress (each phase, each model's epochs) goes to stderr, the tables to stdout.
    """
    from flipless.demo import run_demo, write_demo_report
    from flipless.gate import evaluate_gate

    logs.print(
        Text.assemble(
            ("flipless demo", "bold"),
            f": handwritten digits (scikit-learn), MLP 64-128-10, seed {seed}. The old model "
            "learns 30 % of the training split; the new models learn all of it: plain, fd-kl, "
            "ldi, and the old model fine-tuned, then interpolated back (bcwi).",
        )
    )
    update = run_demo(seed, log=lambda line: logs.print(line, markup=False, soft_wrap=True))
    scenario = update.scenario
    console.print(
        f"old model: {len(scenario.old_train)} images; new models: {len(scenario.new_train)}; "
        f"kept epoch chosen on {len(scenario.validation)} validation images; all measured on "
        f"the same {len(scenario.test)} test images.\n"
    )
    console.print(methods_table(update.comparisons))
    console.print(
        f"bcwi: old weight α = {update.old_weight:g}, chosen on validation by the rule "
        f"{update.summary()['bcwi']['rule']}.",
        markup=False,
    )
    plain = update.comparisons["cross-entropy"]
    if top_flips > 0 and plain.negative_flips:
        console.print(regressions_table(plain.top_regressions(top_flips)))
    console.print("\nA release gate on each (flipless gate OLD NEW --max-nfr 0.01):")
    for name, comparison in update.comparisons.items():
        verdict = evaluate_gate(comparison, max_nfr=0.01)
        mark = Text("pass", style="green") if verdict.passed else Text("FAIL", style="red")
        detail = "; ".join(check.detail for check in verdict.checks)
        console.print(Text("  ").append(mark).append(f" {name}: {detail}"))
    logs.print(f"writing the comparisons, the summary and the report to {out} …", markup=False)
    out.mkdir(parents=True, exist_ok=True)
    for name, comparison in update.comparisons.items():
        comparison.to_json(str(out / f"{name}.json"))
    (out / "summary.json").write_text(json.dumps(update.summary(), indent=1, default=str) + "\n")
    report = write_demo_report(update, out / "report.html")
    console.print(
        f"\nWrote {out}/summary.json and one comparison per method ({out}/<method>.json).",
        markup=False,
    )
    console.print(f"Wrote the interactive report {report}: open it in a browser.", markup=False)
