"""Training progress on the terminal: a live bar, one plain line per epoch, or nothing.

``"bar"`` shows a rich progress bar with the running loss and, after each epoch, a line with
validation accuracy, NFR and BTC; ``"log"`` prints only those lines (for log files and CI);
``"none"`` prints nothing. Everything goes to standard error (:func:`flipless.terminal.log`),
so that standard output keeps the results alone.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from flipless import terminal


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}%"


def epoch_line(record: Any, epochs: int) -> str:
    """One line per epoch: loss, validation accuracy, NFR and BTC."""
    return (
        f"epoch {record.epoch + 1}/{epochs}  loss {record.train_loss:.4f}  "
        f"val accuracy {percent(record.accuracy)}  NFR {percent(record.negative_flip_rate)}  "
        f"BTC {percent(record.backward_trust_compatibility)}  "
        f"{record.samples_per_second:,.0f} samples/s"
    )


class Progress:
    """What the loop reports; a context manager around the whole fit."""

    def __init__(self, mode: str, epochs: int, console: Console | None = None) -> None:
        self.mode = mode
        self.epochs = epochs
        self.console = console or terminal.log()
        self._bar: RichProgress | None = None
        self._task: Any = None
        self._pending = 0
        self._shown = 0.0

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def epoch_start(self, epoch: int, steps: int, done: int) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(
                f"epoch {epoch + 1}/{self.epochs}", total=steps, completed=done, loss="…"
            )

    def step_done(self, loss: Any) -> None:
        """Count a step; the bar is redrawn at most ten times a second (cheap per step)."""
        if self._bar is None:
            return
        self._pending += 1
        now = time.monotonic()
        if now - self._shown >= 0.1:
            self._bar.update(self._task, advance=self._pending, loss=f"{float(loss):.4f}")
            self._pending, self._shown = 0, now

    def note(self, text: str) -> None:
        """A one-off message (e.g. where a run resumes), unless the mode is ``"none"``."""
        if self.mode == "none":
            return
        self.console.print(text, markup=False, soft_wrap=True)

    def epoch_done(self, record: Any) -> None:
        if self._bar is not None and self._pending:
            self._bar.update(self._task, advance=self._pending)
            self._pending = 0
        if self.mode == "none":
            return
        self.console.print(epoch_line(record, self.epochs), markup=False, soft_wrap=True)
