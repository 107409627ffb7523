"""The benchmark scripts' shared options: the published results are written only with
--publish, and --methods runs a subset (the reference always)."""

from __future__ import annotations

import argparse
import importlib.util
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
