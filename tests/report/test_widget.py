"""The notebook widget: the same data as the HTML file, fresh each time, updated as runs arrive."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

import flipless
from flipless.errors import InputError, MissingExtraError
from flipless.report import ReportWidget
from flipless.report.html import asset
from flipless.report.payload import build_payload
from flipless.report.sources import load_source
from flipless.report.widget import widget_class

LABELS = np.arange(30) % 3


def comparison(seed: int):
    rng = np.random.default_rng(seed)
    new = np.where(rng.random(30) < 0.8, LABELS, (LABELS + 1) % 3)
    return flipless.compare(np.where(np.arange(30) % 4 == 0, 0, LABELS), new, LABELS)


def record(tmp_path, index: int) -> dict:
    found = comparison(index)
    found.to_json(str(tmp_path / f"c{index}.json"))
    metrics = {
        "accuracy": found.accuracy_new,
        "old_accuracy": found.accuracy_old,
        "negative_flip_rate": found.negative_flip_rate,
        "positive_flip_rate": found.positive_flip_rate,
        "relative_negative_flip_rate": found.relative_negative_flip_rate,
        "backward_trust_compatibility": found.backward_trust_compatibility,
        "backward_error_compatibility": found.backward_error_compatibility,
        "size": 30,
    }
    return {
        "schema": "flipless.sweep-record/1",
        "point_id": f"fd-kl/weight={index}/seed=0",
        "method": "fd-kl",
        "kind": "loss",
        "strength_name": "weight",
        "strength": float(index),
        "seed": 0,
        "config": {},
        "metrics": {"dev": metrics, "test": metrics},
        "comparison_path": f"c{index}.json",
        "model_path": None,
        "duration_s": 1.0,
        "finished_at": "2026-11-25T16:40:00+00:00",
        "versions": {},
    }


def test_the_widget_carries_the_reports_data():
    found = comparison(0)
    widget = ReportWidget(found, title="t")
    expected = build_payload(load_source(found), title="t")
    assert widget.payload == {"main": expected.main, "comparisons": expected.comparisons}
    json.dumps(widget.payload, allow_nan=False)
    assert widget._esm.startswith(asset("report.js")) and "export default" in widget._esm
    assert widget._css == asset("report.css")


def test_widgets_start_fresh_every_time():
    first = ReportWidget(comparison(0))
    second = ReportWidget(comparison(1))
    third = ReportWidget()
    assert first.payload["comparisons"][0]["counts"] == comparison(0).counts.as_dict()
    assert second.payload["comparisons"][0]["counts"] == comparison(1).counts.as_dict()
    assert third.payload is None
    assert ReportWidget is widget_class()  # one class; the state lives in the instances
    for widget in (first, second, third):
        widget.close()


def test_records_added_one_by_one(tmp_path):
    widget = ReportWidget(base_dir=tmp_path)
    widget.add_record(record(tmp_path, 0))
    widget.add_record(record(tmp_path, 1))
    points = widget.payload["main"]["sweep"]["points"]
    assert [p["point_id"] for p in points] == ["fd-kl/weight=0/seed=0", "fd-kl/weight=1/seed=0"]
    assert len(widget.payload["comparisons"]) == 2
    with pytest.raises(InputError, match="expected a sweep record dict"):
        widget.add_record(["not", "a", "record"])
    widget.show(comparison(2))  # another source replaces the records
    assert widget.payload["main"]["sweep"] is None


def test_watching_a_store_shows_runs_as_they_finish(tmp_path):
    from flipless.sweep.store import ResultsStore

    path = tmp_path / "results.jsonl"
    widget = ReportWidget(path, watch=0.05)  # the store does not exist yet
    try:
        assert widget.payload is None
        store = ResultsStore(path)
        for count in (1, 2):
            store.append(record(tmp_path, count))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                widget.payload is None or len(widget.payload["main"]["sweep"]["points"]) < count
            ):
                time.sleep(0.02)
            assert len(widget.payload["main"]["sweep"]["points"]) == count
    finally:
        widget.close()
    assert widget._watcher is None


def test_watch_needs_a_path():
    widget = ReportWidget(comparison(0))
    with pytest.raises(InputError, match="watch needs a results store path"):
        widget.watch(1.0)


def test_without_anywidget_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "anywidget", None)  # `import anywidget` raises ImportError
    widget_class.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[report\]'"):
            from flipless.report import ReportWidget as _  # noqa: F401
    finally:
        widget_class.cache_clear()
