"""Reports of a sweep copied to a bucket (memory://): the store, its comparisons, the HTML."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

import flipless
from flipless import remote
from flipless.errors import InputError
from flipless.report import ReportWidget, write_report

LABELS = np.arange(30) % 3


def sweep_in_a_bucket() -> str:
    """A store of two points, each with its comparison JSON beside it, under a memory:// URL."""
    folder = f"memory://sweep-{uuid.uuid4().hex[:8]}"
    lines = []
    for index in (1, 2):
        new = np.where(np.arange(30) % (index + 3) == 0, (LABELS + 1) % 3, LABELS)
        comparison = flipless.compare(np.where(np.arange(30) % 4 == 0, 0, LABELS), new, LABELS)
        comparison.to_json(f"{folder}/c{index}.json")
        metrics = {
            "accuracy": comparison.accuracy_new,
            "old_accuracy": comparison.accuracy_old,
            "negative_flip_rate": comparison.negative_flip_rate,
            "backward_trust_compatibility": comparison.backward_trust_compatibility,
            "backward_error_compatibility": comparison.backward_error_compatibility,
        }
        lines.append(
            json.dumps(
                {
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
                }
            )
        )
    remote.write_text(f"{folder}/results.jsonl", "\n".join(lines) + "\n")
    return folder


def test_a_report_of_a_remote_store_written_to_a_url():
    folder = sweep_in_a_bucket()
    out = write_report(f"{folder}/results.jsonl", f"{folder}/report.html")
    assert out == f"{folder}/report.html"
    page = remote.read_text(out)
    assert "fd-kl/weight=2/seed=0" in page and page.rstrip().endswith("</html>")


def test_the_widget_reads_a_remote_store_but_does_not_watch_it():
    pytest.importorskip("anywidget")
    folder = sweep_in_a_bucket()
    widget = ReportWidget(f"{folder}/results.jsonl")
    try:
        assert len(widget.payload["main"]["sweep"]["points"]) == 2
        assert len(widget.payload["comparisons"]) == 2  # found beside the store
        with pytest.raises(InputError, match="watch polls a local store"):
            widget.watch(0.1)
    finally:
        widget.close()
