"""The report inside Jupyter: an `anywidget <https://anywidget.dev>`_ running the same script.

The widget's module is ``assets/report.js`` plus a small ``export default`` that draws the
``payload`` trait and draws it again whenever it changes (keeping the selected run). Each
widget holds its own source and data, so creating one any number of times starts fresh.

For a sweep that is still running, ``watch=`` seconds polls the results store and redraws when
it grows; ``add_record`` appends a record directly (e.g. from the sweep's own callback).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.errors import FliplessError, FliplessWarning, InputError, MissingExtraError
from flipless.report.html import asset
from flipless.report.payload import MAX_INSTANCES_PER_POINT, build_payload
from flipless.report.sources import STORE_SUFFIXES, from_records, load_source

_WIDGET_GLUE = """
export default {
  render({ model, el }) {
    let view = null;
    const draw = () => {
      const kept = view ? view.selectedPoint() : null;
      if (view) view.destroy();
      const data = model.get("payload");
      view = render(el, data ? data.main : null, {
        comparison: (i) => model.get("payload").comparisons[i],
        selectedPoint: kept,
      });
    };
    draw();
    model.on("change:payload", draw);
    return () => {
      model.off("change:payload", draw);
      if (view) view.destroy();
    };
  },
};
"""


def widget_module() -> str:
    """The widget's ES module: the report script and its anywidget entry point."""
    return asset("report.js") + "\n" + _WIDGET_GLUE


def _require_anywidget() -> tuple[Any, Any]:
    try:
        import anywidget
        import traitlets
    except ImportError as error:
        raise MissingExtraError(
            "The report widget needs anywidget, which is not installed; install the extra with "
            "`pip install 'flipless[report]'` (write_report needs no extra)."
        ) from error
    return anywidget, traitlets


@functools.cache
def widget_class() -> type:
    """The ReportWidget class (built on first use, so that anywidget stays optional)."""
    anywidget, traitlets = _require_anywidget()

    class ReportWidget(anywidget.AnyWidget):
        """The report's views in a notebook.

        Args:
            source: what :func:`flipless.report.write_report` accepts, or None (nothing yet).
            inputs, texts, renderer, metadata, title, max_instances_per_point, base_dir: as in
                :func:`~flipless.report.write_report`.
            watch: poll a results store path every ``watch`` seconds and redraw when it changes.
        """

        _esm = widget_module()
        _css = asset("report.css")
        payload = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)

        def __init__(
            self,
            source: Any = None,
            *,
            inputs: Any = None,
            texts: Any = None,
            renderer: Any = None,
            metadata: Any = None,
            title: str | None = None,
            max_instances_per_point: int | None = MAX_INSTANCES_PER_POINT,
            base_dir: str | os.PathLike[str] | None = None,
            watch: float | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._options = {
                "inputs": inputs,
                "texts": texts,
                "renderer": renderer,
                "metadata": metadata,
                "title": title,
                "max_instances_per_point": max_instances_per_point,
            }
            self._base_dir = base_dir
            self._source: Any = None
            self._records: list[dict[str, Any]] = []
            self._stop = threading.Event()
            self._watcher: threading.Thread | None = None
            self.last_error: FliplessError | None = None
            self.show(source)
            if watch is not None:
                self.watch(watch)

        def show(self, source: Any) -> None:
            """Show another source (replacing records added with :meth:`add_record`)."""
            self._source, self._records = source, []
            self.refresh()

        def add_record(self, record: Mapping[str, Any]) -> None:
            """Add one finished sweep point (a ``flipless.sweep-record/1`` dict) and redraw."""
            if not isinstance(record, Mapping):
                raise InputError(
                    f"record is a {type(record).__name__}; expected a sweep record dict."
                )
            self._records.append(dict(record))
            self._source = list(self._records)
            self.refresh()

        def refresh(self) -> None:
            """Read the source again (a store path may have grown) and redraw."""
            source = self._source
            if (
                isinstance(source, (str, os.PathLike))
                and remote.suffix_of(source) in STORE_SUFFIXES
            ):
                from flipless.sweep.store import read_records

                records = read_records(source)  # a store not written yet has none
                loaded = from_records(records, remote.parent_of(source)) if records else None
            else:
                loaded = None if source is None else load_source(source, base_dir=self._base_dir)
            if loaded is None:
                self.payload = None
                return
            built = build_payload(loaded, **self._options)
            self.payload = {"main": built.main, "comparisons": built.comparisons}

        def watch(self, interval_s: float = 2.0) -> None:
            """Poll the source path every ``interval_s`` seconds; redraw when the file changes."""
            if not isinstance(self._source, (str, os.PathLike)):
                raise InputError(
                    "watch needs a results store path as the source; for records in memory call "
                    "add_record(record) as each run finishes."
                )
            if remote.is_remote(self._source):
                raise InputError(
                    f"watch polls a local store's file; {self._source} is a URL. Call refresh() "
                    "to read it again, or watch the sweep's local store."
                )
            if not interval_s > 0:
                raise InputError(
                    f"interval_s={interval_s!r}; expected a positive number of seconds."
                )
            self.stop()
            self._stop = threading.Event()
            self._watcher = threading.Thread(
                target=self._poll, args=(Path(self._source), interval_s, self._stop), daemon=True
            )
            self._watcher.start()

        def _poll(self, path: Path, interval_s: float, stop: threading.Event) -> None:
            seen = _signature(path)
            while not stop.wait(interval_s):
                now = _signature(path)
                if now == seen:
                    continue
                try:
                    self.refresh()
                    seen, self.last_error = now, None
                except FliplessError as error:  # e.g. a store being written: try again later
                    if self.last_error is None:
                        warnings.warn(f"Report widget: {error}", FliplessWarning, stacklevel=1)
                    self.last_error = error

        def stop(self) -> None:
            """Stop watching (no-op when not watching)."""
            self._stop.set()
            if self._watcher is not None and self._watcher is not threading.current_thread():
                self._watcher.join()
            self._watcher = None

        def close(self) -> None:
            self.stop()
            super().close()

    ReportWidget.__module__ = __name__
    return ReportWidget


def _signature(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file, None when it does not exist (yet)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_mtime_ns, found.st_size
