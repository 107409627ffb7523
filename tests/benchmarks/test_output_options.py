"""The benchmark scripts' shared options: the published results are written only with
--publish, and --methods runs a subset (the reference always)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(common, *arguments, methods=()):
    parser = argparse.ArgumentParser()
    common.add_output_options(parser, "loss_overhead", methods)
    return parser.parse_args(list(arguments))


def test_by_default_a_run_does_not_touch_the_published_results(common):
    assert common.output_path(parse(common), "loss_overhead") == (
        BENCHMARKS / "out" / "loss_overhead.json"
    )
    published = common.output_path(parse(common, "--publish"), "loss_overhead")
    assert published == BENCHMARKS / "results" / "loss_overhead.json"
    assert common.output_path(parse(common, "--output", "x.json"), "loss_overhead") == Path(
        "x.json"
    )
    with pytest.raises(SystemExit, match="--output or --publish"):
        common.output_path(parse(common, "--publish", "--output", "x.json"), "loss_overhead")


def test_methods_runs_a_subset_in_the_scripts_order_with_the_reference(common):
    methods = ("plain", "fd-kl", "ldi", "bcwi")
    args = parse(common, "--methods", "bcwi", "fd-kl", methods=methods)
    assert common.chosen_methods(args, methods, always=("plain",)) == ("plain", "fd-kl", "bcwi")
    assert common.chosen_methods(parse(common, methods=methods), methods) == methods
    with pytest.raises(SystemExit, match="unknown"):
        common.chosen_methods(parse(common, "--methods", "nope", methods=methods), methods)


def test_the_scratch_folder_is_ignored_by_git():
    ignored = (BENCHMARKS.parent / ".gitignore").read_text().splitlines()
    assert "benchmarks/out/" in ignored


def test_the_help_of_methods_names_the_baseline_that_always_runs(common):
    parser = argparse.ArgumentParser()
    common.add_output_options(parser, "loss_overhead", ("a", "b"), always=("a",))
    help_text = " ".join(parser.format_help().split())
    assert "a always runs, the baseline the ratios are measured against" in help_text


def run_script(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_loss_overhead_runs_the_chosen_variants_with_the_baseline_and_their_goals(tmp_path):
    output = tmp_path / "loss_overhead.json"
    arguments = ("--samples", "256", "--repeats", "1", "--methods", "c", "--output", str(output))
    completed = run_script("loss_overhead", *arguments)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert list(result["seconds_per_epoch"]) == ["a", "c", "t"]  # (c)'s goal needs (t)
    assert list(result["goals"]) == ["c"]
    assert result["live_minus_cached_over_teacher_forward"] is None
    assert "(b)" not in completed.stdout and "(c)'s goal" in completed.stdout


@pytest.mark.slow
def test_metrics_throughput_times_flipless_and_only_the_chosen_comparison(tmp_path):
    output = tmp_path / "metrics_throughput.json"
    arguments = ("--size", "5000", "--classes", "4", "--repeats", "1", "--methods", "floor")
    completed = run_script("metrics_throughput", *arguments, "--output", str(output))
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert list(result["seconds"]) == ["flipless", "floor"]
    assert "speedup_over_per_element_loop" not in result
    assert set(result["goals"]) == {"ratio_to_floor_at_most", "peak_bytes_below"}
    assert "per-element" not in completed.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "baseline"),
    [
        ("training_throughput", "minimal always runs"),
        ("merge_memory", "read_sequential, read_mapped, write_once always runs"),
    ],
)
def test_the_other_benchmarks_take_methods_and_refuse_unknown_ones(name, baseline):
    helped = run_script(name, "--help")
    assert helped.returncode == 0 and baseline in " ".join(helped.stdout.split())
    refused = run_script(name, "--methods", "nope", "--output", os.devnull)
    assert refused.returncode != 0 and "--methods: unknown ['nope']" in refused.stderr


@pytest.mark.slow  # imports torch and flipless: ~3 s
def test_training_throughput_keeps_the_minimal_loop_in_a_subset(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "benchmarks_training_throughput", BENCHMARKS / "training_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_arguments(["--methods", "fit_fd_kl", "--output", "x.json"])
    assert args.loops == ("minimal", "fit_fd_kl")
    assert module.parse_arguments(["--output", "x.json"]).loops == tuple(module.LOOPS)
