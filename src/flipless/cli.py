"""The ``flipless`` command: compare two models' predictions, gate a release, run the demo.

Errors that flipless raises on purpose (:class:`~flipless.errors.FliplessError`) are printed
without a traceback and exit with status 2; ``gate`` exits 1 when a rule is violated.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flipless import __version__
from flipless.errors import FliplessError
from flipless.metrics.comparison import Comparison
from flipless.metrics.display import group_table, regressions_table

app = typer.Typer(
    name="flipless",
    help="Measure, gate and reduce what a model update breaks (negative flips).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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


def _read_comparison(
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
        columns = _split(score_cols)
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
        class_names=_split(class_names) if class_names else None,
        seed=seed,
    )


def _split(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def show_comparison(comparison: Comparison, top_flips: int, class_limit: int = 15) -> None:
    """Print the summary, the per-class and per-slice views and the biggest regressions."""
    console.print(comparison)
    console.print(
        group_table(
            comparison.per_class(), "Per true class (most negative flips first)", class_limit
        )
    )
    for name in comparison.slices:
        console.print(group_table(comparison.per_slice(name), f"Per slice: {name}"))
    if top_flips > 0 and comparison.instances is not None and comparison.negative_flips:
        console.print(regressions_table(comparison.top_regressions(top_flips)))


@app.command()
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
    comparison = _read_comparison(
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


@app.command()
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

    comparison = _read_comparison(
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


@app.command()
@reports_errors
def demo(
    seed: Annotated[int, typer.Option("--seed", help="Seed of data splits and training.")] = 0,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the comparisons and the summary (JSON).")
    ] = Path("flipless-demo"),
    top_flips: Annotated[
        int, typer.Option("--top-flips", help="How many regressions of the plain update to list.")
    ] = 5,
) -> None:
    """Train an old and three new digit classifiers (plain, fd-kl, ldi) and compare them."""
    from flipless.demo import run_demo
    from flipless.gate import evaluate_gate

    console.print(
        "[bold]flipless demo[/]: handwritten digits (scikit-learn), MLP 64-128-10, seed "
        f"{seed}.\nTraining the old model on 30 % of the training split and new models on all "
        "of it: plain, fd-kl, ldi, and the old model fine-tuned then interpolated back (bcwi) …"
    )
    update = run_demo(seed)
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
        highlight=False,
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
    out.mkdir(parents=True, exist_ok=True)
    for name, comparison in update.comparisons.items():
        comparison.to_json(str(out / f"{name}.json"))
    (out / "summary.json").write_text(json.dumps(update.summary(), indent=1, default=str) + "\n")
    console.print(
        f"\nWrote {out}/summary.json and one comparison per method ({out}/<method>.json)."
    )
    from flipless.demo import write_demo_report

    report = write_demo_report(update, out / "report.html")
    console.print(f"Wrote the interactive report {report}: open it in a browser.", highlight=False)


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
            _percent(c.negative_flip_rate),
            _percent(c.positive_flip_rate),
            _percent(c.backward_trust_compatibility),
            _percent(c.backward_error_compatibility),
        )
    first = next(iter(comparisons.values()))
    table.caption = f"old model accuracy {100 * first.accuracy_old:.2f} %"
    return table


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.2f}"


@app.command()
@reports_errors
def train(
    config: Annotated[Path, typer.Argument(help="A TOML or YAML run configuration.")],
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
        from flipless.train.settings import TrainSettings

        run = dataclasses.replace(
            run, train=TrainSettings(**{**dataclasses.asdict(run.train), "progress": progress})
        )
    outcome = run_config(run)
    console.print(methods_table({run.loss.preset: outcome.test_comparison}))
    console.print(
        f"kept epoch {outcome.result.best_epoch + 1} by rule {outcome.result.rule!r} on "
        f"validation; files in {outcome.output_dir}"
    )


@app.command()
@reports_errors
def interpolate(
    old: Annotated[Path, typer.Argument(help="The old checkpoint (file or model folder).")],
    news: Annotated[list[Path], typer.Argument(help="One or more new checkpoints (a soup).")],
    out: Annotated[Path, typer.Option("--out", help="A new or empty output folder.")],
    old_weight: Annotated[
        float | None, typer.Option("--old-weight", help="α, the weight of the old model.")
    ] = None,
    fisher: Annotated[
        Path | None, typer.Option("--fisher", help="The old model's Fisher (safetensors).")
    ] = None,
    soup_weights: Annotated[
        str | None, typer.Option("--soup-weights", help="Weights of the new models: 1,2,…")
    ] = None,
    rule_options: Annotated[
        list[str] | None,
        typer.Option("--rule", help="PATTERN=α for tensors matching a glob (first match wins)."),
    ] = None,
    new_class_rows: Annotated[
        list[str] | None,
        typer.Option(
            "--new-class-rows",
            help="TENSOR=ROWS, e.g. head.weight=10,11: rows copied from the new model(s).",
        ),
    ] = None,
    integer_buffers: Annotated[
        str, typer.Option("--integer-buffers", help="new or old: where integer buffers come from.")
    ] = "new",
    select: Annotated[
        bool, typer.Option("--select", help="Choose α on a dev split (flipless model files).")
    ] = False,
    dev: Annotated[
        str | None,
        typer.Option("--dev", help="Data set for --select: digits, fashion-mnist, massive, …"),
    ] = None,
    data_path: Annotated[
        str | None, typer.Option("--data-path", help="Where the --dev data set lives.")
    ] = None,
    selection_rule: Annotated[
        str, typer.Option("--selection-rule", help="How --select chooses α.")
    ] = "max-old-weight-within:0.005",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the dev split.")] = 0,
    max_shard_gb: Annotated[
        float, typer.Option("--max-shard-gb", help="Largest output shard, in GB.")
    ] = 1.0,
) -> None:
    """Interpolate an old model with new ones: θ = α θ_old + (1 − α) θ̄_new, streamed to --out."""
    from flipless.errors import InputError
    from flipless.merge.files import interpolate_files, select_for_files, write_selection
    from flipless.merge.policy import MergePolicy

    weights = [float(x) for x in _split(soup_weights)] if soup_weights else None
    rules = []
    for option in rule_options or []:
        pattern, _, value = option.rpartition("=")
        if not pattern:
            raise InputError(f"--rule {option!r}: expected PATTERN=α, e.g. 'head.*=0'.")
        rules.append((pattern, float(value)))
    rows: dict[str, list[int]] = {}
    for option in new_class_rows or []:
        tensor, _, indices = option.partition("=")
        if not tensor or not indices:
            raise InputError(
                f"--new-class-rows {option!r}: expected TENSOR=ROWS, e.g. head.bias=10,11."
            )
        rows[tensor] = [int(x) for x in _split(indices)]
    selection = None
    if select:
        if dev is None:
            raise InputError("--select needs --dev: the data set whose validation split chooses α.")
        if old_weight is not None:
            raise InputError("give --old-weight or --select, not both.")
        from flipless.train.config import DataConfig, RunConfig
        from flipless.train.recipe import load_scenario

        scenario = load_scenario(
            RunConfig(output_dir=str(out), seed=seed, data=DataConfig(name=dev, path=data_path))
        )
        console.print(
            f"choosing α on {len(scenario.validation)} validation samples of {dev} "
            f"(rule {selection_rule}) …"
        )
        selection = select_for_files(
            old, news, scenario.validation, rule=selection_rule, fisher=fisher, soup_weights=weights
        )
        console.print(selection_table(selection))
        console.print(Text(selection.reason))
        old_weight = selection.chosen
    if old_weight is None:
        raise InputError("give --old-weight α (0 = new model, 1 = old model) or --select.")
    policy = MergePolicy(
        old_weight, rules=tuple(rules), integer_buffers=integer_buffers, new_class_rows=rows
    )
    written = interpolate_files(
        old,
        news,
        out,
        policy=policy,
        fisher=fisher,
        soup_weights=weights,
        max_shard_bytes=int(max_shard_gb * 2**30),
    )
    if selection is not None:
        write_selection(selection, written / "selection.json")
    console.print(f"Wrote {written} (old weight {old_weight:g}).", highlight=False)


def selection_table(selection: Any) -> Table:
    """The dev curve of an old-weight search, the chosen row marked."""
    table = Table(title=f"Dev curve ({selection.dev_size} samples, in %)")
    table.add_column("α", justify="right")
    for column in ("accuracy", "NFR", "BTC", ""):
        table.add_column(column, justify="right", no_wrap=True)
    for point in selection.curve:
        table.add_row(
            f"{point.old_weight:g}",
            f"{100 * point.accuracy:.2f}",
            _percent(point.negative_flip_rate),
            _percent(point.backward_trust_compatibility),
            "← chosen" if point.old_weight == selection.chosen else "",
        )
    return table


@app.command()
@reports_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="A TOML or YAML sweep configuration.")],
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local worker processes (overrides the config).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="local or ray (overrides the config).")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="The results file, .jsonl or .parquet (overrides the config)."
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
    outcome = run_sweep(settings, quiet=quiet, new_store=force_new_store, console=console)
    if outcome.moved_to is not None:
        console.print(f"The previous store and its files are in {outcome.moved_to}.")
    console.print(front_table(outcome.records))
    selection = select_point(outcome.records, settings.select)
    console.print(Text(f"Chosen on dev by {selection.rule}: {selection.reason}"))
    console.print(
        f"{len(outcome.ran)} point(s) run now, {len(outcome.skipped)} found in {outcome.store}.",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@reports_errors
def report(
    source: Annotated[
        Path,
        typer.Argument(
            help="A comparison JSON (flipless compare --json) or a sweep results store "
            "(.jsonl / .parquet)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    title: Annotated[str | None, typer.Option("--title", help="The report's title.")] = None,
    max_instances_per_point: Annotated[
        int,
        typer.Option(
            "--max-instances-per-point",
            help="Rows embedded per run of a sweep (flips and errors first).",
        ),
    ] = 10_000,
) -> None:
    """Write the interactive HTML report of a comparison or a sweep (one self-contained file)."""
    from flipless.report import write_report

    written = write_report(
        source, out, title=title, max_instances_per_point=max_instances_per_point
    )
    size = written.stat().st_size / 2**20
    console.print(
        f"Wrote {written} ({size:.1f} MiB); open it in a browser.", highlight=False, soft_wrap=True
    )


@app.command()
def version() -> None:
    """Print the flipless version."""
    console.print(f"flipless {__version__} (Python {sys.version.split()[0]})")


if __name__ == "__main__":  # pragma: no cover
    app()
