"""The table ``flipless sweep`` prints at the end: the dev Pareto front with its test numbers."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from flipless.sweep.pareto import groups, pareto_front

COLUMNS = (
    ("dev\naccuracy", "dev", "accuracy"),
    ("dev\nNFR", "dev", "negative_flip_rate"),
    ("test\naccuracy", "test", "accuracy"),
    ("test\nNFR", "test", "negative_flip_rate"),
    ("test\nBTC", "test", "backward_trust_compatibility"),
    ("test\nBEC", "test", "backward_error_compatibility"),
)


def front_table(records: list[dict[str, Any]]) -> Table:
    """The configurations on the dev front of accuracy against NFR, with their dev and test
    accuracy, NFR, BTC and BEC in % (means over seeds; ``summarise`` has the deviations)."""
    front = pareto_front(records, "negative_flip_rate", "accuracy", "dev")
    on_front = {tuple(ids) for ids in front["point_ids"]}
    table = Table(
        title="Pareto front on dev, accuracy against NFR (in %, mean over seeds)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("configuration", no_wrap=True)
    table.add_column("seeds", justify="right")
    for heading, _, _ in COLUMNS:
        table.add_column(heading, justify="right", no_wrap=True)
    for group in groups(records):
        if group.point_ids not in on_front:
            continue
        cells = []
        for _, split, name in COLUMNS:
            value = group.mean(name, split)
            cells.append("n/a" if math.isnan(value) else f"{100 * value:.2f}")
        table.add_row(Text(group.label), str(len(group.records)), *cells)
    return table
