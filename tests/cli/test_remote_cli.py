"""compare, gate and report on s3:// URLs, against a real S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from flipless import Comparison, remote
from flipless.cli import app

runner = CliRunner()

# 8 samples, 2 classes; by hand: old right on 0-5, new right on 0-3 and 6-7:
# negative flips 4 and 5 (NFR 2/8 = 25 %), positive flips 6 and 7.
LABELS = [0, 1, 0, 1, 0, 1, 0, 1]
OLD = [0, 1, 0, 1, 0, 1, 1, 0]
NEW = [0, 1, 0, 1, 1, 0, 0, 1]


@pytest.fixture
def s3_files(s3_bucket):
    urls = []
    for name, predictions in (("old.csv", OLD), ("new.csv", NEW)):
        frame = pd.DataFrame({"id": range(8), "label": LABELS, "pred": predictions})
        urls.append(f"{s3_bucket}/predictions/{name}")
        remote.write_text(urls[-1], frame.to_csv(index=False))
    return s3_bucket, *urls


def test_compare_and_report_on_s3(s3_files):
    bucket, old, new = s3_files
    comparison_url = f"{bucket}/results/comparison.json"
    result = runner.invoke(app, ["compare", old, new, "--json", comparison_url])
    assert result.exit_code == 0, result.output
    comparison = Comparison.from_json(comparison_url)
    assert (comparison.negative_flips, comparison.positive_flips) == (2, 2)
    assert comparison.negative_flip_rate == pytest.approx(0.25, abs=1e-12)

    report_url = f"{bucket}/results/report.html"
    result = runner.invoke(app, ["report", comparison_url, "--out", report_url])
    assert result.exit_code == 0, result.output
    assert report_url in result.output
    page = remote.read_text(report_url)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_gate_on_s3(s3_files):
    bucket, old, new = s3_files
    verdict_url = f"{bucket}/gate.json"
    result = runner.invoke(app, ["gate", old, new, "--max-nfr", "0.1", "--json", verdict_url])
    assert result.exit_code == 1, result.output
    verdict = json.loads(remote.read_text(verdict_url))
    assert verdict["passed"] is False
    assert verdict["violations"][0]["value"] == pytest.approx(0.25)
    passing = runner.invoke(app, ["gate", old, new, "--max-nfr", "0.25"])
    assert passing.exit_code == 0, passing.output


def test_missing_object_exits_2_without_traceback(s3_files):
    bucket, old, _ = s3_files
    result = runner.invoke(app, ["compare", old, f"{bucket}/predictions/missing.csv"])
    assert result.exit_code == 2
    assert "missing.csv does not exist" in result.output
    assert "Traceback" not in result.output
