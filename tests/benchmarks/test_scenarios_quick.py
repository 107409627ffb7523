"""The benchmark scenarios: the shared helpers (goal, statistics, RESULTS.md) and a smoke run of
the tabular scenario's ``--quick`` mode.

The tabular scenario's quick mode (about 15 s on the quiet 2-core CI machine) and
Fashion-MNIST's (SmallCNN → ResNet-8, about 50 s, and the MLPs, about 15 s; skipped without
the Debian package dataset-fashion-mnist) run here. The quick modes of MASSIVE and Banking77 need their MiniLM
encodings cached (the first run encodes every text: minutes), so they stay out of CI;
``test_text_encoder.py`` checks their encoder on a few texts.
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def common():
    """benchmarks/scenario_common.py, imported as the scripts import it (their folder on the
    path)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("scenario_common")
    finally:
        sys.path.remove(str(BENCHMARKS))


def row(nfr: float, accuracy: float) -> dict[str, dict[str, float]]:
    return {
        "negative_flip_rate": {"mean": nfr, "std": 0.0},
        "accuracy_new": {"mean": accuracy, "std": 0.0},
    }


def test_mean_std_matches_statistics(common):
    values = [0.25, 0.5, 1.0]
    got = common.mean_std(values)
    assert got["mean"] == pytest.approx(1.75 / 3)
    assert got["std"] == pytest.approx(statistics.stdev(values))
    assert common.mean_std([0.3]) == {"mean": 0.3, "std": 0.0}
    assert math.isnan(common.mean_std([0.1, math.nan])["mean"])


def test_goal_picks_lowest_nfr_within_accuracy_tolerance(common):
    table = {
        "plain": row(0.050, 0.900),
        "a": row(0.010, 0.890),  # lowest NFR but 1 point less accurate: not allowed
        "b": row(0.028, 0.8975),  # 0.25 points less: allowed, NFR cut 44 %
        "c": row(0.040, 0.905),
    }
    goal = common.evaluate_goal(table, "plain", ["a", "b", "c"])
    assert goal["best_compatible"]["method"] == "b"
    assert goal["best_compatible"]["nfr_cut"] == pytest.approx(1 - 0.028 / 0.050)
    assert goal["best_compatible"]["accuracy_difference"] == pytest.approx(-0.0025)
    assert goal["lowest_nfr_any_accuracy"]["method"] == "a"
    assert goal["met"] is True
    table["b"] = row(0.031, 0.8975)  # a 38 % cut: below the 40 % goal
    assert common.evaluate_goal(table, "plain", ["a", "b", "c"])["met"] is False


def test_goal_without_an_accurate_candidate_is_not_met(common):
    table = {"plain": row(0.05, 0.9), "a": row(0.01, 0.8)}
    goal = common.evaluate_goal(table, "plain", ["a"])
    assert goal["best_compatible"] is None and goal["met"] is False
    assert "not met" in common.goal_lines(goal)[0]


def test_cells_format_percentages_and_seconds(common):
    assert common.cell({"mean": 0.0325, "std": 0.001}, "negative_flip_rate") == "3.25 ± 0.10"
    assert common.cell({"mean": 12.34, "std": 0.5}, "seconds") == "12.3 ± 0.5"
    assert common.cell({"mean": math.nan, "std": math.nan}, "accuracy_new") == "—"


def test_selection_note_lists_the_chosen_weights_and_skips_absent_kinds():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        selection_note = importlib.import_module("scenario_methods").selection_note
    finally:
        sys.path.remove(str(BENCHMARKS))
    table = {
        "plain": row(0.05, 0.9),
        "bcwi": {**row(0.03, 0.9), "old_weight": {"mean": 0.25, "std": 0.05}},
        "fd-kl (λ on dev)": {**row(0.02, 0.9), "weight": {"mean": 0.1, "std": 0.0}},
    }
    assert selection_note(table, list(table)) == (
        "α (old weight) chosen on validation: `bcwi` 0.25 ± 0.05; "
        "λ chosen on validation: `fd-kl (λ on dev)` 0.1 ± 0."
    )
    assert selection_note(table, ["plain", "bcwi"]) == (
        "α (old weight) chosen on validation: `bcwi` 0.25 ± 0.05."
    )
    assert selection_note(table, ["plain"]) == ""


@pytest.mark.slow
def test_tabular_quick_run_writes_a_complete_result(tmp_path):
    output = tmp_path / "scenario_tabular.json"
    results_md = ROOT / "docs" / "RESULTS.md"
    before = results_md.stat().st_mtime_ns if results_md.exists() else None
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "scenario_tabular.py"), "--quick", "--output", output],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["benchmark"] == "scenario_tabular" and result["quick"] is True
    assert result["seeds"] == [0]
    assert set(result["versions"]) >= {"python", "torch", "numpy", "flipless"}
    assert result["config"]["lambdas"] == [1.0]
    assert result["seconds"] > 0 and result["machine"]["cpu_count"] >= 1
    runs = result["runs"]
    assert set(runs) == {"breast-cancer / logistic-regression", "breast-cancer / mlp"}
    for key, seeds in runs.items():
        methods = seeds[0]["methods"]
        assert set(methods) == {
            "plain",
            "new-error λ=1",
            "strict-imitation λ=1",
            "new-error (λ on dev)",
            "strict-imitation (λ on dev)",
        }
        for name, metrics in methods.items():
            for metric in ("accuracy_new", "negative_flip_rate", "backward_trust_compatibility"):
                assert math.isfinite(metrics[metric]) and 0 <= metrics[metric] <= 1, name
            # the rate is the count over the test samples (a hand computation)
            assert metrics["negative_flip_rate"] == pytest.approx(
                metrics["negative_flips"] / metrics["samples"]
            )
            assert metrics["samples"] == seeds[0]["scenario"]["splits"]["test"]["size"]
        # the λ chosen on validation is one of the trained models, with its test numbers
        for loss in ("new-error", "strict-imitation"):
            chosen = methods[f"{loss} (λ on dev)"]
            source = "plain" if chosen["lambda"] == 0 else f"{loss} λ={chosen['lambda']:g}"
            assert chosen == methods[source]
        assert result["goals"][key]["plain"]["negative_flip_rate"] == pytest.approx(
            methods["plain"]["negative_flip_rate"]
        )
    assert (tmp_path / "scenario_tabular.html").stat().st_size > 0
    # a run outside benchmarks/results leaves the generated docs/RESULTS.md alone
    after = results_md.stat().st_mtime_ns if results_md.exists() else None
    assert after == before


@pytest.mark.slow
@pytest.mark.system_package("dataset-fashion-mnist")
@pytest.mark.parametrize("architecture", ["cnn", "mlp"])
def test_fashion_mnist_quick_run_writes_every_method(tmp_path, architecture):
    output = tmp_path / "scenario_fashion_mnist.json"
    command = [sys.executable, str(BENCHMARKS / "scenario_fashion_mnist.py"), "--quick"]
    command += ["--architecture", architecture, "--output", str(output)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["seeds"] == result["seeds_requested"] == [0]
    assert result["config"]["architecture"] == architecture
    (run,) = result["runs"]
    methods = run["methods"]
    assert list(methods) == result["config"]["methods"]
    for name, metrics in methods.items():
        assert 0 <= metrics["accuracy_new"] <= 1 and math.isfinite(metrics["seconds"]), name
        assert metrics["negative_flip_rate"] == pytest.approx(
            metrics["negative_flips"] / metrics["samples"]
        )
    assert methods["bcwi α=0.3"]["old_weight"] == 0.3
    on_dev = [name for name in methods if name.endswith("(λ on dev)")]
    if architecture == "cnn":  # the CPU ResNet setting leaves them out to fit 30 minutes
        assert on_dev == [] and "one-cycle" in result["config"]["optimizer"]
    else:
        assert on_dev == ["fd-kl (λ on dev)", "fd-lm (λ on dev)"]
        grid = [0.0, *result["config"]["weight_grid"]]
        assert methods["fd-kl (λ on dev)"]["weight"] in grid
    # the α chosen on validation is the one the stored dev curve's rule picks
    selection = run["selections"]["bcwi"]
    curve = selection["curve"]
    floor = curve[0]["accuracy"] - 0.003 - 1e-12
    allowed = [p for p in curve if p["accuracy"] >= floor]
    best = min(allowed, key=lambda p: (p["negative_flip_rate"], -p["accuracy"], p["old_weight"]))
    assert selection["chosen"] == best["old_weight"] == methods["bcwi"]["old_weight"]
    assert result["goal"]["plain"]["accuracy"] == pytest.approx(methods["plain"]["accuracy_new"])
    assert (tmp_path / "scenario_fashion_mnist.html").stat().st_size > 0


def test_results_markdown_is_generated_from_every_result(common, tmp_path):
    table = {"plain": row(0.05, 0.9), "fd-kl": row(0.02, 0.899)}
    goal = common.evaluate_goal(table, "plain", ["fd-kl"])
    result = {
        "title": "Scenario X: a test",
        "command": "python benchmarks/scenario_x.py",
        "seeds": [0, 1],
        "seconds": 90.0,
        "quick": False,
        "machine": {
            "processor": "cpu",
            "torch_threads": 1,
            "load_average_1min": {"start": 1.0, "end": 2.0},
        },
        "notes": ["a note"],
        "sections": [
            {
                "title": "test metrics",
                "metrics": ["accuracy_new", "negative_flip_rate"],
                "table": table,
                "goal": goal,
            }
        ],
    }
    (tmp_path / "scenario_x.json").write_text(json.dumps(result))
    text = common.render_results(tmp_path)
    assert text.startswith("# Benchmark scenarios: results")
    assert "Generated file" in text
    assert "## Scenario X: a test" in text
    assert "| fd-kl | 89.90 ± 0.00 | 2.00 ± 0.00 |" in text
    assert "goal **met**: best compatible method `fd-kl`" in text and "+60.0 % cut" in text
