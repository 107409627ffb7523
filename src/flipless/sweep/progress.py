"""A sweep's progress on the terminal: points done out of all, and the best point so far.

The bar (rich) counts finished points, those of earlier runs included, and shows the best
configuration so far by :func:`~flipless.sweep.pareto.best_so_far`: the lowest mean dev NFR
among configurations whose mean dev accuracy is within half a point of the best one. Each
finished or failed point also prints one line, so that logs show what happened.
``quiet=True`` prints nothing. Everything goes to standard error (:func:`flipless.terminal.log`)
unless another console is given.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from flipless import terminal
from flipless.sweep.pareto import best_so_far
from flipless.train.progress import percent


def point_line(record: dict[str, Any], done: int, total: int) -> str:
    """``[3/12] fd-kl/weight=1.0/seed=0: dev accuracy 95.17%  NFR 0.74%  (4.2 s)``."""
    dev = record["metrics"]["dev"]

    def value(name: str) -> str:
        return percent(float("nan") if dev[name] is None else dev[name])

    return (
        f"[{done}/{total}] {record['point_id']}: dev accuracy {value('accuracy')}  "
        f"NFR {value('negative_flip_rate')}  ({record['duration_s']:.1f} s)"
    )


def best_text(records: list[dict[str, Any]]) -> str:
    best = best_so_far(records)
    if best is None:
        return ""
    return (
        f"best: {best.point_ids[0].rsplit('/seed=', 1)[0]}  dev accuracy "
        f"{percent(best.metrics['accuracy'])}  NFR {percent(best.metrics['negative_flip_rate'])}"
    )


class SweepProgress:
    """What the runner reports; a context manager around the whole sweep."""

    def __init__(
        self, total: int, records: list[dict[str, Any]], quiet: bool, console: Console | None = None
    ) -> None:
        self.total = total
        self.records = list(records)
        self.quiet = quiet
        self.console = console or terminal.log()
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> SweepProgress:
        if not self.quiet:
            self._bar = RichProgress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[best]}"),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "sweep", total=self.total, completed=len(self.records), best=best_text(self.records)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def note(self, text: str) -> None:
        """A one-off message, unless quiet."""
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finished(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.note(point_line(record, len(self.records), self.total))
        if self._bar is not None:
            self._bar.update(self._task, advance=1, best=best_text(self.records))

    def failed(self, point_id: str, error: BaseException) -> None:
        self.note(f"failed {point_id}: {type(error).__name__}: {error}")
