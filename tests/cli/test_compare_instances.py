"""`flipless compare --json` writes a summary; `--instances` writes every sample's outcome to a
Parquet file that the JSON names and `flipless report` reads."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flipless.cli import app

runner = CliRunner()

# 12 samples, 3 classes. Old right on 0-8, new right on 0-5 and 9-11:
# negative flips = samples 6, 7, 8; positive flips = 9, 10, 11.
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
OLD = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2, 0])
NEW = np.array([0, 1, 2, 0, 1, 2, 1, 2, 0, 0, 1, 2])


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, predictions, order in (
        ("old", OLD, np.arange(12)),
        ("new", NEW, np.arange(12)[::-1]),
    ):
        frame = pd.DataFrame(
            {"id": [f"s{i}" for i in order], "label": LABELS[order], "pred": predictions[order]}
        )
        paths.append(tmp_path / f"{name}.csv")
        frame.to_csv(paths[-1], index=False)
    return [str(path) for path in paths]


def report_payload(path):
    found = re.search(
        r'<script type="application/json" id="flipless-payload">(.*?)</script>', path.read_text()
    )
    return json.loads(found.group(1))


def test_the_json_is_a_summary_unless_instances_are_asked_for(files, tmp_path):
    out = tmp_path / "c.json"
    result = runner.invoke(app, ["compare", *files, "--json", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["instances"] is None and document["instances_file"] is None
    assert [row["id"] for row in document["top_regressions"]] == ["s6", "s7", "s8"]
    assert [
        (row["label"], row["old_pred"], row["new_pred"]) for row in document["top_regressions"]
    ] == [
        (0, 0, 1),
        (1, 1, 2),
        (2, 2, 0),
    ]
    assert not list(tmp_path.glob("*.parquet"))


def test_instances_file_is_named_by_the_json_and_read_by_report(files, tmp_path):
    out, rows = tmp_path / "c.json", tmp_path / "rows.parquet"
    result = runner.invoke(app, ["compare", *files, "--json", str(out), "--instances", str(rows)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["instances_file"] == "rows.parquet"
    frame = pd.read_parquet(rows)
    assert frame["id"].tolist() == [f"s{i}" for i in range(12)]  # the old file's order
    assert frame.loc[frame["negative_flip"], "id"].tolist() == ["s6", "s7", "s8"]
    assert frame.loc[frame["positive_flip"], "id"].tolist() == ["s9", "s10", "s11"]

    html = tmp_path / "r.html"
    assert runner.invoke(app, ["report", str(out), "--out", str(html)]).exit_code == 0
    assert report_payload(html)["dataset"]["size"] == 12

    moved = tmp_path / "moved.parquet"
    shutil.move(rows, moved)
    assert runner.invoke(app, ["report", str(out), "--out", str(html)]).exit_code == 0
    assert report_payload(html)["dataset"] is None  # counts only, with a warning
    given = runner.invoke(app, ["report", str(out), "--out", str(html), "--instances", str(moved)])
    assert given.exit_code == 0, given.output
    assert report_payload(html)["dataset"]["size"] == 12


def test_json_on_standard_output_names_the_instances_file_by_its_absolute_path(files, tmp_path):
    rows = tmp_path / "rows.parquet"
    result = runner.invoke(app, ["compare", *files, "--json", "-", "--instances", str(rows)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["instances_file"] == str(rows.resolve())


def test_instances_without_json(files, tmp_path):
    rows = tmp_path / "rows.parquet"
    result = runner.invoke(app, ["compare", *files, "--instances", str(rows)])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(rows)["negative_flip"].sum() == 3


def test_gate_json_is_a_summary(files, tmp_path):
    out = tmp_path / "gate.json"
    result = runner.invoke(app, ["gate", *files, "--max-nfr", "0.5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    comparison = json.loads(out.read_text())["comparison"]
    assert comparison["instances"] is None
    assert [row["id"] for row in comparison["top_regressions"]] == ["s6", "s7", "s8"]


def test_report_instances_only_go_with_a_comparison_json(tmp_path):
    store = tmp_path / "results.jsonl"
    store.write_text("")
    result = runner.invoke(app, ["report", str(store), "--instances", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2
    assert "results.jsonl, which is not a comparison JSON" in result.output
