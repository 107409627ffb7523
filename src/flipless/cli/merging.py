"""``flipless interpolate``: old and new checkpoints merged, α given or chosen on dev."""

from __future__ import annotations

import contextlib
import difflib
import math
from fnmatch import fnmatchcase
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from flipless.cli.common import (
    console,
    logs,
    percent,
    reports_errors,
    split_list,
    with_example,
)

EXAMPLE = """Examples:

  flipless interpolate old.safetensors new.safetensors --old-weight 0.3 --out merged

  flipless interpolate old.safetensors new.safetensors --select --dev digits --out merged

  flipless interpolate old/ new-a/ new-b/ --soup-weights 2,1 --old-weight 0.3 --out soup

  flipless interpolate old/ new/ --rule 'head.*=0' --old-weight 0.3 --out merged
"""


@with_example(EXAMPLE)
@reports_errors
def interpolate(
    old: Annotated[  # str, not Path: a URL (s3://bucket/old/) must keep its //
        str, typer.Argument(help="The old checkpoint (file or model folder; a path or a URL).")
    ],
    news: Annotated[list[str], typer.Argument(help="One or more new checkpoints (a soup).")],
    out: Annotated[
        str, typer.Option("--out", help="A new or empty output folder (a path or a new URL).")
    ],
    old_weight: Annotated[
        float | None,
        typer.Option("--old-weight", min=0.0, max=1.0, help="α, the weight of the old model."),
    ] = None,
    fisher: Annotated[
        str | None, typer.Option("--fisher", help="The old model's Fisher (safetensors).")
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
            help="TENSOR=ROWS, e.g. head.weight=10,11 or head.weight=100-149: rows copied "
            "from the new model(s).",
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
    from flipless import remote
    from flipless.errors import InputError
    from flipless.merge.files import interpolate_files, select_for_files, write_selection
    from flipless.merge.policy import MergePolicy

    weights = None
    if soup_weights:
        weights = [
            parse_number(item, "--soup-weights", soup_weights, "2,1")
            for item in split_list(soup_weights)
        ]
    rules = [parse_rule(option) for option in rule_options or []]
    rows = dict(parse_rows(option) for option in new_class_rows or [])
    if rules:
        check_rule_patterns([pattern for pattern, _ in rules], old)
    if integer_buffers not in ("new", "old"):
        raise InputError(f"--integer-buffers {integer_buffers!r}; expected new or old.")
    if not max_shard_gb > 0:
        raise InputError(f"--max-shard-gb {max_shard_gb:g}; expected a size in GB > 0, e.g. 1.")
    base = MergePolicy(
        0.0, rules=tuple(rules), integer_buffers=integer_buffers, new_class_rows=rows
    )
    selection = None
    if select:
        if dev is None:
            raise InputError("--select needs --dev: the data set whose validation split chooses α.")
        if old_weight is not None:
            raise InputError("give --old-weight or --select, not both.")
        from flipless.train.recipe import load_scenario

        scenario = load_scenario(dev_config(dev, data_path, seed, out))
        logs.print(
            f"choosing α on {len(scenario.validation)} validation samples of {dev} "
            f"(rule {selection_rule}) …",
            markup=False,
        )
        selection = select_for_files(
            old,
            news,
            scenario.validation,
            rule=selection_rule,
            fisher=fisher,
            soup_weights=weights,
            policy=base,
        )
        console.print(selection_table(selection))
        console.print(Text(selection.reason))
        old_weight = selection.chosen
    if old_weight is None:
        raise InputError("give --old-weight α (0 = new model, 1 = old model) or --select.")
    policy = base.with_old_weight(old_weight)
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
        write_selection(selection, remote.join(written, "selection.json"))
    logs.print(f"Wrote {written} (old weight {old_weight:g}).", markup=False)


def parse_number(text: str, option: str, given: str, example: str) -> float:
    """``text`` as a finite number, or an InputError naming ``option`` and an example."""
    from flipless.errors import InputError

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{option} {given!r}: {text!r} is not a number; expected e.g. {example}.")
    return value


def parse_rule(option: str) -> tuple[str, float]:
    """``PATTERN=α`` → (pattern, α); the pattern may itself hold '=' (the last one splits)."""
    from flipless.errors import InputError

    pattern, _, value = option.rpartition("=")
    if not pattern or not value:
        raise InputError(f"--rule {option!r}: expected PATTERN=α, e.g. 'head.*=0'.")
    return pattern, parse_number(value, "--rule", option, "'head.*=0'")


def parse_rows(option: str) -> tuple[str, list[int]]:
    """``TENSOR=ROWS`` → (tensor name, row indices ≥ 0); ROWS are indices and inclusive
    ranges separated by commas: ``head.weight=7,8,9`` or ``head.weight=100-149``."""
    from flipless.errors import InputError

    tensor, _, indices = option.rpartition("=")
    items = split_list(indices)
    bounds = [item.partition("-")[::2] for item in items]
    well_formed = all(
        first.isdigit() and (not last or (last.isdigit() and int(last) >= int(first)))
        for first, last in bounds
    )
    if not tensor or not items or not well_formed:
        raise InputError(
            f"--new-class-rows {option!r}: expected TENSOR=ROWS, row indices ≥ 0 or ranges "
            "FIRST-LAST separated by commas, e.g. head.bias=10,11 or head.bias=100-149."
        )
    rows = []
    for first, last in bounds:
        rows.extend(range(int(first), int(last or first) + 1))
    return tensor, rows


def check_rule_patterns(patterns: list[str], old: str) -> None:
    """Every ``--rule`` pattern matches a tensor of the old checkpoint, or an InputError that
    names the tensor names closest to it (a typo, most often)."""
    from flipless.errors import InputError
    from flipless.merge.files import local_checkpoint
    from flipless.merge.streaming import open_checkpoint

    with contextlib.ExitStack() as stack:
        names = list(open_checkpoint(local_checkpoint(old, stack)).tensors)
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in names):
            closest = difflib.get_close_matches(pattern, names, n=3, cutoff=0.0)
            raise InputError(
                f"--rule {pattern!r} matches no tensor of {old}; the closest names are "
                f"{', '.join(closest)}. Patterns are fnmatch globs on tensor names, e.g. 'head.*'."
            )


def dev_config(dev: str, data_path: str | None, seed: int, out: str) -> Any:
    """The run config whose scenario gives --select its dev split (checked as a config is)."""
    from flipless import remote
    from flipless.errors import InputError
    from flipless.train.config import parse_config

    document = {
        "output_dir": "." if remote.is_remote(out) else out,  # a run's folder; nothing is written
        "seed": seed,
        "data": {"name": dev} | ({"path": data_path} if data_path is not None else {}),
        "old": {"train_epochs": 1},
    }
    try:
        return parse_config(document)
    except InputError as error:
        raise InputError(f"--dev {dev!r} / --data-path: {error}") from None


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
