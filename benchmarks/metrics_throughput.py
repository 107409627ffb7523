"""How fast is a full Comparison on 10 million predictions, and how much memory does it take?

Measured in one run, on the same arrays (these machines are noisy, so only ratios count):

* flipless: ``compare(old, new, labels)`` plus every dataset rate and the per-class table
  (100 classes), per-instance outcomes kept;
* floor: one numpy pass that reads the three arrays once (``old.sum(); new.sum(); labels.sum()``),
  the memory-bound least any exact computation must do;
* per-element loop: BackwardCompatibilityML-style Python loops over the label tensors computing
  BTC and BEC, timed on a subsample and scaled linearly to the full size.

Peak memory: the extra memory ``compare`` allocates (tracemalloc, which numpy reports to) and
the process's maximum resident size (inputs included).
Goals (issue 2): within 4× of the floor, ≥ 1000× faster than the loop, peak < 1 GB.

``--methods floor`` (or ``loop``) measures only that comparison; flipless, the time both ratios
are taken against, always runs (with its memory), and only the goals of what ran are printed.

Usage: python benchmarks/metrics_throughput.py [--size N] [--classes K] [--repeats R]
       [--methods VARIANT ...] [--output PATH | --publish]
Writes benchmarks/out/metrics_throughput.json (the published
benchmarks/results/metrics_throughput.json with --publish).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import torch

import flipless
from common import add_output_options, chosen_methods, output_path, write_atomically
from flipless import compare

VARIANTS = {
    "flipless": "flipless full comparison",
    "floor": "memory-bound floor",
    "loop": "per-element Python loop",
}


def timed(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_comparison(old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> None:
    comparison = compare(old, new, labels)
    comparison.counts.rates()
    comparison.per_class()


def memory_floor(old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> None:
    old.sum()
    new.sum()
    labels.sum()


def per_element_scores(
    old: torch.Tensor, new: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """BTC and BEC the way BackwardCompatibilityML's score functions compute them: a Python
    loop that indexes the label tensors one element at a time."""
    old_correct = both_correct = old_wrong = both_wrong = 0
    for i in range(len(labels)):
        old_label, new_label, label = old[i], new[i], labels[i]
        if old_label == label:
            old_correct += 1
            if new_label == label:
                both_correct += 1
        else:
            old_wrong += 1
            if new_label != label:
                both_wrong += 1
    return both_correct / max(old_correct, 1), both_wrong / max(old_wrong, 1)


def make_predictions(size: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size)
    old = np.where(rng.random(size) < 0.80, labels, rng.integers(0, classes, size))
    new = np.where(rng.random(size) < 0.85, labels, rng.integers(0, classes, size))
    return old, new, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-size", type=int, default=20_000)
    add_output_options(parser, "metrics_throughput", tuple(VARIANTS), always=("flipless",))
    args = parser.parse_args()
    output = output_path(args, "metrics_throughput")
    variants = chosen_methods(args, tuple(VARIANTS), always=("flipless",))

    old, new, labels = make_predictions(args.size, args.classes)
    flipless_seconds = timed(lambda: full_comparison(old, new, labels), args.repeats)
    seconds = {"flipless": flipless_seconds}
    ratios: dict[str, float] = {}
    lines = [
        f"  flipless full comparison : {flipless_seconds * 1e3:8.1f} ms "
        f"({args.size / flipless_seconds / 1e6:.0f} M predictions/s)"
    ]
    if "floor" in variants:
        seconds["floor"] = timed(lambda: memory_floor(old, new, labels), args.repeats)
        ratios["ratio_to_floor"] = flipless_seconds / seconds["floor"]
        lines.append(
            f"  memory-bound floor       : {seconds['floor'] * 1e3:8.1f} ms  → ratio "
            f"{ratios['ratio_to_floor']:.2f}× (goal ≤ 4×)"
        )
    if "loop" in variants:
        subsample = [torch.from_numpy(array[: args.loop_size]) for array in (old, new, labels)]
        one_run = timed(lambda: per_element_scores(*subsample), 1)
        seconds["per_element_loop_scaled"] = one_run * args.size / args.loop_size
        ratios["speedup_over_per_element_loop"] = seconds["per_element_loop_scaled"] / (
            flipless_seconds
        )
        lines.append(
            f"  per-element Python loop  : {seconds['per_element_loop_scaled']:8.2f} s   → "
            f"flipless is {ratios['speedup_over_per_element_loop']:,.0f}× faster (goal ≥ 1000×)"
        )

    tracemalloc.start()
    full_comparison(old, new, labels)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    result = {
        "benchmark": "metrics_throughput",
        "flipless_version": flipless.__version__,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "size": args.size,
        "classes": args.classes,
        "input_bytes": int(old.nbytes + new.nbytes + labels.nbytes),
        "variants": {variant: VARIANTS[variant] for variant in variants},
        "seconds": seconds,
        "predictions_per_second": args.size / flipless_seconds,
        **ratios,
        "peak_bytes_allocated_by_compare": traced_peak,
        "max_resident_bytes_including_inputs": max_rss,
        "goals": {
            **({"ratio_to_floor_at_most": 4.0} if "floor" in variants else {}),
            **({"speedup_at_least": 1000.0} if "loop" in variants else {}),
            "peak_bytes_below": 1 << 30,
        },
    }
    write_atomically(output, json.dumps(result, indent=2) + "\n")
    lines.append(
        f"  peak allocated by compare: {traced_peak / 2**20:8.1f} MiB; max RSS incl. inputs "
        f"{max_rss / 2**20:.0f} MiB (goal < 1024 MiB)"
    )
    print(
        f"{args.size:,} predictions, {args.classes} classes\n"
        + "\n".join(lines)
        + f"\nwrote {output}"
    )


if __name__ == "__main__":
    main()
