"""How fast does ``flipless.train.fit`` train, next to a minimal PyTorch loop, and on 2 processes?

(1) Loop overhead. The same MLP (flatten → 512 → ReLU → 512 → ReLU → 10, flipless's
:class:`~flipless.train.MLP`, same initial weights every run), data, batch size 256, optimizer
(SGD, lr 0.05, momentum 0.9) and batch order, ``--epochs`` epochs each, trained by

* the minimal loop: the fastest honest hand-written loop over tensors already in memory::

      for idx in order.split(256):
          loss = F.cross_entropy(model(x[idx]), y[idx])
          opt.zero_grad(); loss.backward(); opt.step()

  where ``order`` is the permutation ``fit`` uses for that epoch (seeded by seed and epoch),
  so both loops do the same arithmetic: the final weights are compared as a check;
* ``fit``: ``flipless.train.fit`` with plain cross-entropy (no objective), no validation data,
  no output folder and ``progress="none"``, so it only trains; timed as the wall time of the
  whole ``fit(...)`` call (set-up and the end-of-epoch bookkeeping included);
* ``fit`` with an objective (for information): ``build_loss("fd-kl")`` with a
  :class:`~flipless.teachers.CachedTeacher` built before timing from an old model (another
  seed, one epoch of training).

After one warm-up run of each, they run round-robin (minimal, fit, fit + fd-kl, minimal, …)
``--repeats`` times, so drifts in machine speed hit them alike. Goal (issue 4): samples/s of
``fit`` ≥ 0.95 × the minimal loop's, judged on the ratio of the medians; the ratio of the
fastest runs is reported too, as it is the least disturbed by other work on a shared machine.

(2) Two processes. The script launches itself under torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node=P <script> --worker``) with
P = 2, and with P = 1 the same way; each worker warms up with one ``fit`` and times
``--repeats`` more (plain cross-entropy, same global batch 256, so 128 per process); the time
of one run is the wall time of ``fit`` between two barriers, on rank 0. torchrun gives each of
several processes one thread (``OMP_NUM_THREADS=1``), so on a 2-core machine 2 processes use
the same cores as 1 process with its default threads: 1 process is run both ways.

Data: Fashion-MNIST's 60,000 training images when the Debian package dataset-fashion-mnist is
installed (``/usr/share/datasets/fashion-mnist/``), else scikit-learn's 8×8 digits (the
training split of :func:`~flipless.data.loaders.load_digits`) repeated to about 20,000.

``--methods fit_fd_kl`` times only those loops of (1); the minimal loop, the baseline of every
ratio, always runs, and the goal is printed only when ``fit`` ran.

Usage: python benchmarks/training_throughput.py [--repeats R] [--epochs E] [--samples N]
       [--skip-distributed] [--methods LOOP ...] [--output PATH | --publish]
Writes benchmarks/out/training_throughput.json (the published
benchmarks/results/training_throughput.json with --publish).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import flipless
from common import (
    add_output_options,
    chosen_methods,
    load_average,
    machine_facts,
    output_path,
    write_atomically,
)
from flipless.data.loaders import FASHION_MNIST_DEBIAN_PATH, load_digits, load_fashion_mnist
from flipless.losses import CompatibilityLoss, build_loss
from flipless.teachers import CachedTeacher
from flipless.train import MLP, LabeledData, TrainSettings, distributed, fit

DIGITS_TARGET_SIZE = 20_000
HIDDEN = (512, 512)
BATCH_SIZE = 256
LEARNING_RATE = 0.05
MOMENTUM = 0.9
ORDER_SEED = 0  # TrainSettings.seed: decides every epoch's batch order
NEW_MODEL_SEED = 0
OLD_MODEL_SEED = 1
FIT_GOAL = 0.95
LOOPS = {
    "minimal": "minimal PyTorch loop (baseline)",
    "fit": "flipless fit, cross-entropy",
    "fit_fd_kl": "flipless fit, fd-kl + cached teacher",
}
LAUNCHES = {  # name: (processes, OMP_NUM_THREADS; None leaves torch's default)
    "1 process, default threads": (1, None),
    "1 process, 1 thread": (1, 1),
    "2 processes, 1 thread each": (2, None),  # torchrun sets OMP_NUM_THREADS=1
}


def load_train(samples: int | None) -> tuple[LabeledData, str]:
    """The training split, capped at its first ``samples`` rows, and what it is."""
    if FASHION_MNIST_DEBIAN_PATH.is_dir():
        data, name = load_fashion_mnist()["train"], "fashion-mnist"
    else:
        digits = load_digits()["train"]
        copies = -(-DIGITS_TARGET_SIZE // len(digits))  # ceiling division
        data = LabeledData.from_arrays(
            digits.inputs.repeat(copies, 1, 1, 1),
            digits.labels.repeat(copies),
            class_names=digits.class_names,
            name="digits/train repeated",
        )
        name = f"sklearn-digits train x{copies}"
    if samples is not None and samples < len(data):
        data = data.subset(np.arange(samples))
    return data, name


def make_model(data: LabeledData, seed: int) -> MLP:
    """flatten → 512 → ReLU → 512 → ReLU → classes, initialised from ``seed``."""
    torch.manual_seed(seed)
    return MLP(int(np.prod(data.inputs.shape[1:])), data.num_classes, hidden=HIDDEN)


def make_optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=LEARNING_RATE, momentum=MOMENTUM)


def settings(epochs: int) -> TrainSettings:
    return TrainSettings(
        epochs=epochs, batch_size=BATCH_SIZE, seed=ORDER_SEED, progress="none", device="cpu"
    )


def epoch_order(size: int, epoch: int) -> torch.Tensor:
    """The permutation ``fit`` draws for ``epoch`` (flipless.train.loop._epoch_order), so the
    minimal loop sees the same batches; the final-weights check would show any drift."""
    generator = torch.Generator().manual_seed(ORDER_SEED * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def trained_samples(size: int, processes: int) -> int:
    """Samples one epoch of ``fit`` trains on: all, unless the last batch is too small to give
    every process a sample (then ``fit`` drops it)."""
    remainder = size % BATCH_SIZE
    return size - remainder if 0 < remainder < processes else size


def minimal_loop(model: MLP, x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """Seconds to train ``epochs`` epochs with the minimal loop (fresh optimizer)."""
    model.train()
    optimizer = make_optimizer(model.parameters())
    start = time.perf_counter()
    for epoch in range(epochs):
        for idx in epoch_order(len(y), epoch).split(BATCH_SIZE):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def fit_seconds(
    model: MLP,
    data: LabeledData,
    epochs: int,
    objective: CompatibilityLoss | None = None,
    teacher: CachedTeacher | None = None,
) -> tuple[float, float]:
    """Wall seconds of ``fit(...)``, and the seconds its epochs report (the loop alone)."""
    run_settings = settings(epochs)
    start = time.perf_counter()
    result = fit(
        model,
        data,
        None,
        objective=objective,
        teacher=teacher,
        optimizer=make_optimizer,
        settings=run_settings,
    )
    seconds = time.perf_counter() - start
    return seconds, sum(record.seconds for record in result.history)


def build_teacher(data: LabeledData, folder: Path) -> CachedTeacher:
    """An old model (another seed, one epoch of the minimal loop), its logits cached on disk."""
    old_model = make_model(data, OLD_MODEL_SEED)
    minimal_loop(old_model, data.inputs, data.labels, epochs=1)
    old_model.requires_grad_(False).eval()
    batches = zip(data.inputs.split(1024), data.ids.split(1024), strict=True)
    path = folder / "teacher.safetensors"
    CachedTeacher.build(old_model, batches, path)
    return CachedTeacher.load(path)


def max_weight_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    return max(float((first[key] - second[key]).abs().max()) for key in first)


def compare_loops(
    data: LabeledData, epochs: int, repeats: int, chosen: tuple[str, ...] = tuple(LOOPS)
) -> dict[str, Any]:
    """Question (1): the ``chosen`` loops round-robin after a warm-up of each.

    Returns, per loop, the wall seconds of every timed run and the seconds of its training
    epochs alone (for ``fit``: the sum of ``EpochRecord.seconds``; for the minimal loop: the
    same as the wall time), and how far the warm-up's final weights of ``fit`` are from the
    minimal loop's (0 when both did the same arithmetic; None when ``fit`` did not run).
    """
    model = make_model(data, NEW_MODEL_SEED)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    objective = build_loss("fd-kl")
    with tempfile.TemporaryDirectory() as folder:
        teacher = build_teacher(data, Path(folder)) if "fit_fd_kl" in chosen else None
        runners: dict[str, Callable[[], tuple[float, float]]] = {
            "minimal": lambda: (minimal_loop(model, data.inputs, data.labels, epochs),) * 2,
            "fit": lambda: fit_seconds(model, data, epochs),
            "fit_fd_kl": lambda: fit_seconds(model, data, epochs, objective, teacher),
        }

        def run(key: str) -> tuple[float, float]:
            model.load_state_dict(initial)
            model.zero_grad(set_to_none=True)  # fit adds to gradients left from the last run
            return runners[key]()

        final_weights = {}
        for key in chosen:  # warm-up
            run(key)
            final_weights[key] = {name: v.clone() for name, v in model.state_dict().items()}
        seconds: dict[str, list[float]] = {key: [] for key in chosen}
        epoch_seconds: dict[str, list[float]] = {key: [] for key in chosen}
        for _ in range(repeats):
            for key in chosen:
                wall, epochs_only = run(key)
                seconds[key].append(wall)
                epoch_seconds[key].append(epochs_only)
    return {
        "seconds": seconds,
        "epoch_seconds": epoch_seconds,
        "max_weight_difference_fit_vs_minimal": (
            max_weight_difference(final_weights["minimal"], final_weights["fit"])
            if "fit" in final_weights
            else None
        ),
    }


# -- question (2): torchrun --------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One torchrun process: a warm-up ``fit``, then ``--repeats`` timed ones; rank 0 writes
    the seconds of each (``fit`` between two barriers) to ``--worker-output``."""
    world = distributed.setup("cpu")
    try:
        data, _ = load_train(args.samples)
        model = make_model(data, NEW_MODEL_SEED)
        initial = {key: value.clone() for key, value in model.state_dict().items()}

        def timed_fit() -> float:
            model.load_state_dict(initial)
            model.zero_grad(set_to_none=True)
            run_settings = settings(args.epochs)
            distributed.barrier(world)
            start = time.perf_counter()
            fit(model, data, None, optimizer=make_optimizer, settings=run_settings)
            distributed.barrier(world)
            return time.perf_counter() - start

        timed_fit()
        seconds = [timed_fit() for _ in range(args.repeats)]
        if world.is_main:
            report = {
                "processes": world.size,
                "torch_threads_per_process": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "seconds": seconds,
                "load_average_1min_after": load_average(),
                "samples_per_run": trained_samples(len(data), world.size) * args.epochs,
            }
            write_atomically(args.worker_output, json.dumps(report))
    finally:
        distributed.shutdown()


def launch(processes: int, threads: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """Run this script's worker under torchrun with ``processes`` processes; its report."""
    environment = dict(os.environ)
    environment.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "worker.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(Path(__file__).resolve()),
            "--worker",
            f"--worker-output={output}",
            f"--repeats={args.repeats}",
            f"--epochs={args.epochs}",
        ]
        if args.samples is not None:
            command.append(f"--samples={args.samples}")
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        if finished.returncode != 0 or not output.exists():
            sys.exit(
                f"torchrun with {processes} process(es) failed (exit code "
                f"{finished.returncode}):\n{finished.stderr[-4000:]}"
            )
        report = json.loads(output.read_text())
    report["samples_per_second"] = report["samples_per_run"] / statistics.median(report["seconds"])
    report["samples_per_second_fastest_run"] = report["samples_per_run"] / min(report["seconds"])
    return report


def compare_launches(args: argparse.Namespace) -> dict[str, Any]:
    """Question (2): each launch of LAUNCHES once, in order, and the scaling ratios."""
    reports = {name: launch(*how, args) for name, how in LAUNCHES.items()}
    two = reports["2 processes, 1 thread each"]["samples_per_second"]
    return {
        "runs": reports,
        "scaling_2_processes_over_1_process_default_threads": two
        / reports["1 process, default threads"]["samples_per_second"],
        "scaling_2_processes_over_1_process_1_thread": two
        / reports["1 process, 1 thread"]["samples_per_second"],
        "note": (
            "torchrun sets OMP_NUM_THREADS=1 for each of several processes, so on this "
            f"{os.cpu_count()}-core machine the 2 processes get one core each; the fair "
            "baseline for the same cores is 1 process with its default threads, and 1 process "
            "with 1 thread shows the scaling per core. Same global batch (256) in every run."
        ),
    }


# -- records ---------------------------------------------------------------------------------


def loops_table(loops: dict[str, Any], samples: int) -> str:
    lines = [
        "| loop | median s | min s | samples/s (median) | ÷ minimal (medians) | ÷ minimal (minima) |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in LOOPS.items():
        if key not in loops["seconds"]:
            continue
        median = statistics.median(loops["seconds"][key])
        lines.append(
            f"| {label} | {median:.3f} | {min(loops['seconds'][key]):.3f} | "
            f"{samples / median:,.0f} | {loops['ratio_to_minimal'][key]:.3f} | "
            f"{loops['ratio_to_minimal_of_fastest_runs'][key]:.3f} |"
        )
    return "\n".join(lines)


def launches_table(launches: dict[str, Any]) -> str:
    lines = [
        "| torchrun launch | threads/process | median s | min s | samples/s (median) |",
        "|---|---|---|---|---|",
    ]
    for name, report in launches["runs"].items():
        lines.append(
            f"| {name} | {report['torch_threads_per_process']} | "
            f"{statistics.median(report['seconds']):.3f} | {min(report['seconds']):.3f} | "
            f"{report['samples_per_second']:,.0f} |"
        )
    return "\n".join(lines)


def parse_arguments(arguments: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per loop")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run")
    parser.add_argument("--samples", type=int, default=None, help="cap the training samples")
    parser.add_argument("--skip-distributed", action="store_true", help="skip question (2)")
    add_output_options(parser, "training_throughput", tuple(LOOPS), always=("minimal",))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(arguments)
    args.output = output_path(args, "training_throughput")
    args.loops = chosen_methods(args, tuple(LOOPS), always=("minimal",))
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}.")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1; got {args.epochs}.")
    if args.samples is not None and args.samples < BATCH_SIZE:
        parser.error(f"--samples must be at least one batch ({BATCH_SIZE}); got {args.samples}.")
    if args.worker and args.worker_output is None:
        parser.error("--worker needs --worker-output (the launcher passes it).")
    return args


def main() -> None:
    args = parse_arguments()
    if args.worker:
        worker(args)
        return
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    load_before = load_average()
    data, data_name = load_train(args.samples)
    samples = trained_samples(len(data), 1) * args.epochs

    loops = compare_loops(data, args.epochs, args.repeats, args.loops)
    medians = {key: statistics.median(times) for key, times in loops["seconds"].items()}
    minima = {key: min(times) for key, times in loops["seconds"].items()}
    loops["ratio_to_minimal"] = {key: medians["minimal"] / medians[key] for key in args.loops}
    loops["ratio_to_minimal_of_fastest_runs"] = {
        key: minima["minimal"] / minima[key] for key in args.loops
    }
    loops["samples_per_second"] = {key: samples / medians[key] for key in args.loops}
    goal = None
    if "fit" in args.loops:
        fit_loop_only = statistics.median(loops["epoch_seconds"]["fit"])
        loops["fit_set_up_and_bookkeeping_seconds"] = statistics.median(
            wall - epochs_only
            for wall, epochs_only in zip(
                loops["seconds"]["fit"], loops["epoch_seconds"]["fit"], strict=True
            )
        )
        goal_met = loops["ratio_to_minimal"]["fit"] >= FIT_GOAL
        goal = {"fit_over_minimal_at_least": FIT_GOAL, "met": goal_met}
    load_between = load_average()
    launches = None if args.skip_distributed else compare_launches(args)
    load_after = load_average()

    result = {
        "benchmark": "training_throughput",
        "flipless_version": flipless.__version__,
        "machine": machine_facts(
            {
                "before": load_before,
                "after_loops": load_between,
                "after": load_after,
            }
        ),
        "data": data_name,
        "samples_per_epoch": len(data),
        "epochs_per_run": args.epochs,
        "batch_size": BATCH_SIZE,
        "model": "flipless MLP flatten-512-ReLU-512-ReLU-10",
        "optimizer": {"name": "SGD", "lr": LEARNING_RATE, "momentum": MOMENTUM},
        "seeds": {"order": ORDER_SEED, "new_model": NEW_MODEL_SEED, "old_model": OLD_MODEL_SEED},
        "repeats": args.repeats,
        "loops": {key: LOOPS[key] for key in args.loops},
        "loop_overhead": loops,
        "goal": goal,
        "distributed": launches,
    }
    write_atomically(args.output, json.dumps(result, indent=2) + "\n")

    report = [
        f"{data_name}: {len(data):,} samples × {args.epochs} epoch(s), batch {BATCH_SIZE}, "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats (load average "
        f"{load_before:.1f} before, {load_between:.1f} after the loops, {load_after:.1f} at the end)",
        "",
        loops_table(loops, samples),
    ]
    if goal is not None:
        report += [
            "",
            f"fit ÷ minimal = {loops['ratio_to_minimal']['fit']:.3f} (goal ≥ {FIT_GOAL}): "
            f"{'met' if goal['met'] else 'NOT met'}; fit's own epoch time (median) "
            f"{fit_loop_only:.3f} s, so set-up and bookkeeping took "
            f"{loops['fit_set_up_and_bookkeeping_seconds']:.3f} s; largest weight difference "
            f"fit vs minimal: {loops['max_weight_difference_fit_vs_minimal']:.2e}",
        ]
    if launches is not None:
        report += [
            "",
            launches_table(launches),
            "",
            "2 processes ÷ 1 process: "
            f"{launches['scaling_2_processes_over_1_process_default_threads']:.3f} (1 process on "
            f"default threads), {launches['scaling_2_processes_over_1_process_1_thread']:.3f} "
            "(1 process on 1 thread)",
        ]
    report.append(f"wrote {args.output}")
    print("\n".join(report))


if __name__ == "__main__":
    main()
