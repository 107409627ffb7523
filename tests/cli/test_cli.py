"""The command line on real files: compare, gate (exit codes 0 / 1 / 2), demo, JSON outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flipless import Comparison
from flipless.cli import app

runner = CliRunner()

# 12 samples, 3 classes. Old right on 0-8, new right on 0-5 and 9-11:
# negative flips = samples 6, 7, 8 (3 of 12 → NFR 25 %); positive flips = 9, 10, 11.
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
OLD = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2, 0])
NEW = np.array([0, 1, 2, 0, 1, 2, 1, 2, 0, 0, 1, 2])
REGION = np.array(["north"] * 6 + ["south"] * 6)  # all three negative flips are in the south


def _write(tmp_path, name, predictions, order):
    frame = pd.DataFrame(
        {
            "id": [f"s{i}" for i in order],
            "label": LABELS[order],
            "pred": predictions[order],
            "region": REGION[order],
        }
    )
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path):
    old = _write(tmp_path, "old.csv", OLD, np.arange(12))
    new = _write(tmp_path, "new.csv", NEW, np.arange(12)[::-1])  # other row order: joined by id
    return old, new


def test_compare_prints_the_table_and_writes_json(files, tmp_path):
    out = tmp_path / "comparison.json"
    instances = ["--instances", str(tmp_path / "instances.parquet")]  # flipped ids are per sample
    result = runner.invoke(
        app,
        [
            "compare",
            str(files[0]),
            str(files[1]),
            "--slice",
            "region",
            "--json",
            str(out),
            *instances,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "NFR" in result.output and "25.00 %" in result.output
    assert "Per slice: region" in result.output
    comparison = Comparison.from_json(str(out))
    assert comparison.negative_flips == 3 and comparison.positive_flips == 3
    assert sorted(comparison.negative_flip_ids().tolist()) == ["s6", "s7", "s8"]
    south = comparison.slices["region"].counts("south")
    assert south.negative_flips == 3 and south.total == 6


@pytest.mark.parametrize(
    ("rules", "exit_code", "expected"),
    [
        (["--max-nfr", "0.30"], 0, "PASS"),
        (["--max-nfr", "0.20"], 1, "FAIL max_nfr [all]: NFR 25.00 % > max 20.00 %"),
        (
            ["--max-slice-nfr", "0.40", "--slice", "region"],
            1,
            "FAIL max_slice_nfr [slice region=south]",
        ),
        (["--max-class-nfr", "0.5"], 0, "PASS"),
        (["--min-accuracy-gain", "0.01"], 1, "FAIL min_accuracy_gain"),
        (["--min-accuracy-gain", "0"], 0, "PASS"),
        (["--significance", "0.05"], 0, "PASS"),
    ],
)
def test_gate_exit_codes(files, rules, exit_code, expected):
    result = runner.invoke(app, ["gate", str(files[0]), str(files[1]), *rules])
    assert result.exit_code == exit_code, result.output
    assert expected in result.output


def test_gate_writes_a_json_verdict(files, tmp_path):
    out = tmp_path / "verdict.json"
    result = runner.invoke(
        app, ["gate", str(files[0]), str(files[1]), "--max-nfr", "0.1", "--json", str(out)]
    )
    assert result.exit_code == 1
    verdict = json.loads(out.read_text())
    assert verdict["passed"] is False
    assert verdict["violations"][0]["rule"] == "max_nfr"
    assert verdict["violations"][0]["value"] == pytest.approx(0.25)
    assert verdict["comparison"]["counts"]["negative_flips"] == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["gate", "{old}", "{new}"], "No gate rule given"),
        (["gate", "{old}", "{new}", "--max-nfr", "2"], "expected a fraction"),
        (["gate", "{old}", "{new}", "--max-slice-nfr", "0.1"], "needs slice columns"),
        (["compare", "{old}", "{missing}"], "missing.csv"),
        (["compare", "{old}", "{new}", "--slice", "nope"], "nope"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(files, tmp_path, arguments, message):
    names = {"old": str(files[0]), "new": str(files[1]), "missing": str(tmp_path / "missing.csv")}
    result = runner.invoke(app, [a.format(**names) for a in arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_ids_are_an_error_unless_inner_join(tmp_path):
    old = _write(tmp_path, "old.csv", OLD, np.arange(12))
    new = _write(tmp_path, "new.csv", NEW, np.arange(10))
    failed = runner.invoke(app, ["compare", str(old), str(new)])
    assert failed.exit_code == 2 and "s10" in failed.output
    joined = runner.invoke(
        app, ["compare", str(old), str(new), "--inner-join", "--json", str(tmp_path / "c.json")]
    )
    assert joined.exit_code == 0, joined.output
    assert Comparison.from_json(str(tmp_path / "c.json")).counts.total == 10


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_trains_compatible_models_and_writes_their_comparisons(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "New models against the old one" in result.stdout
    # every phase announced, every model's epochs labelled, all on stderr
    for phase in ("[1/6] old model", "[2/6] new model, cross-entropy", "[6/6] bcwi"):
        assert phase in result.stderr and phase not in result.stdout, phase
    for label in ("old model", "new fd-kl", "fine-tuned"):
        assert f"  {label}  epoch 30/30  loss" in result.stderr, label
    assert "Biggest regressions" in result.output and "release gate" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["cross-entropy", "fd-kl", "ldi", "fine-tuned", "bcwi"]
    assert 0 <= summary["bcwi"]["old_weight"] <= 1 and "bcwi: old weight" in result.output
    plain = Comparison.from_json(str(out / "cross-entropy.json"))
    assert plain.counts.total == 451  # the digits test split
    assert plain.accuracy_new > plain.accuracy_old  # more data helped on average …
    assert plain.negative_flips > 0  # … and still broke some digits
    for name in ("fd-kl", "ldi"):  # the compatible updates break fewer
        compatible = Comparison.from_json(str(out / f"{name}.json"))
        assert compatible.negative_flips < plain.negative_flips
        assert summary["methods"][name]["negative_flips"] == compatible.negative_flips
    _check_demo_report(out, result.output)
    again = runner.invoke(app, ["demo", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "summary.json").read_text()) == summary  # seeded


def _check_demo_report(out, output: str) -> None:
    """`flipless demo` ends by writing the interactive report of its update."""
    report = out / "report.html"
    assert f"Wrote the interactive report {report}" in output.replace("\n", "")
    html = report.read_text("utf-8")
    documents = {
        name: json.loads(text)
        for name, text in re.findall(
            r'<script type="application/json" id="([^"]+)">(.*?)</script>', html, re.S
        )
    }
    main = documents["flipless-payload"]
    methods = ["cross-entropy", "fd-kl", "ldi", "fine-tuned", "bcwi"]
    assert main["comparisons"] == methods and main["initial"] == 0
    assert [p["method"] for p in main["sweep"]["points"]] == methods
    assert main["dataset"]["size"] == 451  # the digits test split
    for index, name in enumerate(methods):
        written = Comparison.from_json(str(out / f"{name}.json"))
        assert documents[f"flipless-comparison-{index}"]["counts"] == written.counts.as_dict()
        accuracy = main["sweep"]["metrics"]["given"]["accuracy"][index]
        assert accuracy == written.accuracy_new
    # A thumbnail (8×8 digit) for every test image that either model got wrong.
    plain = Comparison.from_json(str(out / "cross-entropy.json")).instances
    wrong = {int(i) for i, ok in enumerate(plain.old_correct & plain.new_correct) if not ok}
    assert wrong <= {int(row) for row in main["dataset"]["thumbnails"]}


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and "flipless" in result.output


def test_text_labels_with_scores_take_class_names_from_the_option(tmp_path):
    rows = {"id": [1, 2, 3, 4], "label": ["cat", "dog", "owl", "cat"]}
    old = pd.DataFrame(
        {**rows, "logit_0": [3, 0, 0, 0], "logit_1": [0, 3, 0, 3], "logit_2": [0, 0, 3, 0]}
    )
    new = pd.DataFrame(
        {**rows, "logit_0": [0, 0, 0, 3], "logit_1": [3, 3, 0, 0], "logit_2": [0, 0, 3, 0]}
    )
    old.to_csv(tmp_path / "old.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "c.json"
    result = runner.invoke(
        app,
        [
            "compare",
            str(tmp_path / "old.csv"),
            str(tmp_path / "new.csv"),
            "--class-names",
            "cat,dog,owl",
            "--json",
            str(out),
            "--instances",
            str(tmp_path / "c.parquet"),
        ],
    )
    assert result.exit_code == 0, result.output
    comparison = Comparison.from_json(str(out))
    # sample 1 (cat): old answers cat, new answers dog → the one negative flip
    assert comparison.class_names == ("cat", "dog", "owl")
    assert comparison.negative_flip_ids().tolist() == [1]
    assert comparison.positive_flip_ids().tolist() == [4]
