"""`flipless report SOURCE --out report.html`: from a comparison JSON and from a results store."""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
from typer.testing import CliRunner

import flipless
from flipless import cli
from flipless.cli import app
from flipless.report.payload import MAX_INSTANCES_PER_POINT

runner = CliRunner()


def comparison():
    labels = np.arange(20) % 2
    return flipless.compare(labels, np.where(np.arange(20) < 3, 1 - labels, labels), labels)


def payload(path):
    text = path.read_text()
    found = re.search(r'<script type="application/json" id="flipless-payload">(.*?)</script>', text)
    return json.loads(found.group(1))


def test_report_from_a_comparison_json(tmp_path):
    comparison().to_json(str(tmp_path / "update.json"))
    out = tmp_path / "update.html"
    result = runner.invoke(
        app, ["report", str(tmp_path / "update.json"), "--out", str(out), "--title", "v1 → v2"]
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.output and "MiB" in result.output
    assert payload(out)["title"] == "v1 → v2"
    assert payload(out)["dataset"]["size"] == 20


def test_report_from_a_results_store(tmp_path):
    from flipless.sweep.store import ResultsStore

    comparison().to_json(str(tmp_path / "c.json"))
    metrics = {
        "accuracy": 0.85,
        "old_accuracy": 1.0,
        "negative_flip_rate": 0.15,
        "positive_flip_rate": 0.0,
        "relative_negative_flip_rate": None,
        "backward_trust_compatibility": 0.85,
        "backward_error_compatibility": 0.0,
        "size": 20,
    }
    ResultsStore(tmp_path / "results.jsonl").append(
        {
            "schema": "flipless.sweep-record/1",
            "point_id": "fd-kl/weight=1.0/seed=0",
            "method": "fd-kl",
            "kind": "loss",
            "strength_name": "weight",
            "strength": 1.0,
            "seed": 0,
            "config": {},
            "metrics": {"dev": metrics, "test": metrics},
            "comparison_path": "c.json",
            "model_path": None,
            "duration_s": 1.0,
            "finished_at": "2026-11-25T16:40:00+00:00",
            "versions": {},
        }
    )
    out = tmp_path / "sweep.html"
    result = runner.invoke(app, ["report", str(tmp_path / "results.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert payload(out)["sweep"]["points"][0]["comparison"] == 0


def test_errors_are_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "none.json"), "--out", "x.html"])
    assert result.exit_code == 2
    assert "error: No such file" in result.output and "Traceback" not in result.output


def test_the_default_cap_is_the_librarys():
    default = inspect.signature(cli.report).parameters["max_instances_per_point"].default
    assert default == MAX_INSTANCES_PER_POINT
