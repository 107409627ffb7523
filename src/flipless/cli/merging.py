"""``flipless interpolate``: old and new checkpoints merged, α given or chosen on dev."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from flipless.cli.common import console, percent, reports_errors, split_list


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

    weights = [float(x) for x in split_list(soup_weights)] if soup_weights else None
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
        rows[tensor] = [int(x) for x in split_list(indices)]
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
            percent(point.negative_flip_rate),
            percent(point.backward_trust_compatibility),
            "← chosen" if point.old_weight == selection.chosen else "",
        )
    return table
