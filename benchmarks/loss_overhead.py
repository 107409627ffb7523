"""What does compatible training cost per epoch, compared with plain cross-entropy?

One epoch of the same MLP (flatten → 512 → ReLU → 512 → ReLU → 10), on the same data, batch
order (a DataLoader over (x, y, id) with a fixed shuffle seed, no worker processes), batch size
256 and optimizer (SGD, lr 0.05, momentum 0.9), trained with

* (a) plain cross-entropy: the baseline;
* (b) ``build_loss("fd-kl")`` with a :class:`~flipless.teachers.CachedTeacher`: the old model's
  logits are computed once before timing and looked up by sample id each step;
* (c) ``build_loss("fd-kl")`` with a live :class:`~flipless.teachers.ModelTeacher`: the old
  model runs on every batch under ``no_grad``;
* (d) BackwardCompatibilityML's new-error training step (see :func:`bcml_step`): the old model's
  forward, then the student on the whole batch and again on the samples the old model gets right;

and, separately, (t) the old model's forward passes alone (under ``no_grad``, data loading not
counted), which is what a live teacher must add at the least.

Every new-model epoch starts from the same initial weights and a fresh optimizer. After one
warm-up epoch per variant, the variants run round-robin (a, b, c, d, t, a, b, …) ``--repeats``
times, so drifts in machine speed hit them alike; the median and the minimum epoch time are
reported, and ratios to (a) are taken from the medians.
Goals (issue 3): (b) ≤ 1.10 × (a); (c) ≤ 1 + t / a (the teacher's forward cost and no more).

Data: Fashion-MNIST's 60,000 training images when the Debian package dataset-fashion-mnist is
installed (``/usr/share/datasets/fashion-mnist/``), else scikit-learn's 8×8 digits repeated to
about 20,000 samples. The old model (another seed) is trained for one epoch before timing so
that its "old model right" masks are meaningful.

``--methods b c`` times only those variants; (a), the baseline of every ratio, always runs,
and (c) brings (t), which its goal needs. Goals are printed for the variants that ran.

Usage: python benchmarks/loss_overhead.py [--repeats R] [--samples N] [--methods KEY ...]
[--output PATH | --publish]. Writes benchmarks/out/loss_overhead.json (the published
benchmarks/results/loss_overhead.json with --publish).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flipless
from common import (
    add_output_options,
    chosen_methods,
    load_average,
    machine_facts,
    output_path,
    write_atomically,
)
from flipless.losses import CompatibilityLoss, build_loss
from flipless.teachers import CachedTeacher, ModelTeacher

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TARGET_SIZE = 20_000
BATCH_SIZE = 256
LEARNING_RATE = 0.05
MOMENTUM = 0.9
SHUFFLE_SEED = 0
NEW_MODEL_SEED = 0
OLD_MODEL_SEED = 1
BCML_LAMBDA = 0.5
CACHED_GOAL = 1.10
VARIANTS = {
    "a": "plain cross-entropy (baseline)",
    "b": "fd-kl, cached teacher logits",
    "c": "fd-kl, live teacher model",
    "d": "BackwardCompatibilityML new-error step",
    "t": "old model forward alone (no_grad)",
}

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def load_data(samples: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images as float32 in [0, 1] and int64 labels, capped at ``samples`` rows."""
    if FASHION_MNIST.is_dir():
        with gzip.open(FASHION_MNIST / "train-images-idx3-ubyte.gz", "rb") as fh:
            images = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(FASHION_MNIST / "train-labels-idx1-ubyte.gz", "rb") as fh:
            labels = np.frombuffer(fh.read(), dtype=np.uint8, offset=8)
        x, y, name = images.astype(np.float32) / 255.0, labels.astype(np.int64), "fashion-mnist"
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        copies = -(-DIGITS_TARGET_SIZE // len(digits.target))  # ceiling division
        x = np.tile(digits.images.astype(np.float32) / 16.0, (copies, 1, 1))
        y = np.tile(digits.target.astype(np.int64), copies)
        name = f"sklearn-digits x{copies}"
    if samples is not None:
        x, y = x[:samples], y[:samples]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), name


def make_mlp(num_inputs: int, seed: int) -> nn.Module:
    """flatten → 512 → ReLU → 512 → ReLU → 10, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(num_inputs, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


def make_loader(dataset: TensorDataset) -> DataLoader:
    """The training loader; a fresh fixed-seed generator gives every epoch the same order."""
    generator = torch.Generator().manual_seed(SHUFFLE_SEED)
    return DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, generator=generator, num_workers=0
    )


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def plain_step(model: nn.Module, batch: Batch) -> torch.Tensor:
    """(a) CE(new(x), y)."""
    x, y, _ = batch
    return F.cross_entropy(model(x), y)


def objective_step(
    model: nn.Module,
    batch: Batch,
    objective: CompatibilityLoss,
    teacher: CachedTeacher | ModelTeacher,
) -> torch.Tensor:
    """(b), (c) the flipless objective with the teacher's logits for this batch."""
    x, y, ids = batch
    total, _ = objective(model(x), y, teacher.logits(x, ids))
    return total


def bcml_step(model: nn.Module, batch: Batch, old_model: nn.Module) -> torch.Tensor:
    """(d) BackwardCompatibilityML's new-error compatibility training step (their algorithm,
    written here from its description, to compare its cost).

    Per batch: the old model h1 runs under ``no_grad`` to find S = {i : argmax h1(x_i) = y_i},
    then the student h2 runs twice, on the whole batch and again on the rows in S:

        loss = CE(h2(x), y) + λ · CE(h2(x[S]), y[S]),   λ = 0.5

    (the second term is left out when S is empty). The second student forward, and its
    backward, is the extra cost that a focus-weighted per-sample term over one forward avoids.
    """
    x, y, _ = batch
    with torch.no_grad():
        old_correct = old_model(x).argmax(dim=1) == y
    loss = F.cross_entropy(model(x), y)
    if bool(old_correct.any()):
        loss = loss + BCML_LAMBDA * F.cross_entropy(model(x[old_correct]), y[old_correct])
    return loss


def train_epoch(
    model: nn.Module, dataset: TensorDataset, step: Callable[[nn.Module, Batch], torch.Tensor]
) -> float:
    """Time one epoch of SGD (a fresh optimizer) on ``step``'s loss."""
    model.train()
    optimizer = make_optimizer(model)
    loader = make_loader(dataset)
    start = time.perf_counter()
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        step(model, batch).backward()
        optimizer.step()
    return time.perf_counter() - start


def teacher_forward_seconds(old_model: nn.Module, dataset: TensorDataset) -> float:
    """(t) Total time of the old model's forward passes over one epoch, under ``no_grad``;
    fetching the batches is not counted (every variant pays it already)."""
    old_model.eval()
    total = 0.0
    with torch.no_grad():
        for x, _, _ in make_loader(dataset):
            start = time.perf_counter()
            old_model(x)
            total += time.perf_counter() - start
    return total


def build_cache(
    old_model: nn.Module, x: torch.Tensor, ids: torch.Tensor, path: Path
) -> CachedTeacher:
    """Run the old model once over the data, write the safetensors cache, read it back."""
    batches = DataLoader(TensorDataset(x, ids), batch_size=1024, shuffle=False)
    CachedTeacher.build(old_model, batches, path)
    return CachedTeacher.load(path)


def markdown_table(seconds: dict[str, list[float]], ratios: dict[str, float], goals: dict) -> str:
    lines = [
        "| variant | median s/epoch | min s/epoch | ratio to (a) | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in VARIANTS.items():
        if key not in seconds:
            continue
        goal = goals.get(key)
        goal_text = f"≤ {goal['ratio_at_most']:.2f}×" if goal else ""
        met_text = ("yes" if goal["met"] else "NO") if goal else ""
        lines.append(
            f"| ({key}) {label} | {statistics.median(seconds[key]):.3f} | "
            f"{min(seconds[key]):.3f} | {ratios[key]:.3f}× | {goal_text} | {met_text} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant")
    parser.add_argument("--samples", type=int, default=None, help="cap the training samples")
    add_output_options(parser, "loss_overhead", tuple(VARIANTS), always=("a",))
    args = parser.parse_args()
    variants = chosen_methods(args, tuple(VARIANTS), always=("a",))
    if "c" in variants and "t" not in variants:
        variants += ("t",)  # (c)'s goal is 1 + t/a
    args.output = output_path(args, "loss_overhead")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}.")
    if args.samples is not None and args.samples < BATCH_SIZE:
        parser.error(f"--samples must be at least one batch ({BATCH_SIZE}); got {args.samples}.")

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    load_before = load_average()
    x, y, data_name = load_data(args.samples)
    ids = torch.arange(len(y), dtype=torch.int64)
    dataset = TensorDataset(x, y, ids)
    num_inputs = int(np.prod(x.shape[1:]))

    old_model = make_mlp(num_inputs, OLD_MODEL_SEED)
    train_epoch(old_model, dataset, plain_step)  # not timed
    old_model.requires_grad_(False).eval()
    new_model = make_mlp(num_inputs, NEW_MODEL_SEED)
    initial_state = {k: v.clone() for k, v in new_model.state_dict().items()}

    objective = build_loss("fd-kl")
    live_teacher = ModelTeacher(old_model)
    with tempfile.TemporaryDirectory() as folder:
        cached_teacher = build_cache(old_model, x, ids, Path(folder) / "teacher.safetensors")
        old_accuracy = float((cached_teacher.logits(x, ids).argmax(dim=1) == y).double().mean())
        steps: dict[str, Callable[[nn.Module, Batch], torch.Tensor]] = {
            "a": plain_step,
            "b": lambda m, b: objective_step(m, b, objective, cached_teacher),
            "c": lambda m, b: objective_step(m, b, objective, live_teacher),
            "d": lambda m, b: bcml_step(m, b, old_model),
        }

        def run(key: str) -> float:
            if key == "t":
                return teacher_forward_seconds(old_model, dataset)
            new_model.load_state_dict(initial_state)  # every epoch starts from the same weights
            return train_epoch(new_model, dataset, steps[key])

        for key in variants:  # warm-up
            run(key)
        seconds: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(args.repeats):
            for key in variants:
                seconds[key].append(run(key))

    load_after = load_average()
    medians = {key: statistics.median(times) for key, times in seconds.items()}
    ratios = {key: medians[key] / medians["a"] for key in variants}
    goals = {}
    if "b" in variants:
        goals["b"] = {"ratio_at_most": CACHED_GOAL, "met": ratios["b"] <= CACHED_GOAL}
    if "c" in variants:
        live_goal = 1.0 + medians["t"] / medians["a"]
        goals["c"] = {"ratio_at_most": live_goal, "met": ratios["c"] <= live_goal}
    live_extra = None  # ≈ 1: a live teacher adds its forward t and no more
    if {"b", "c"} <= set(variants):
        live_extra = (medians["c"] - medians["b"]) / medians["t"]
    result = {
        "benchmark": "loss_overhead",
        "flipless_version": flipless.__version__,
        "machine": machine_facts({"before": load_before, "after": load_after}),
        "data": data_name,
        "samples": len(y),
        "batch_size": BATCH_SIZE,
        "batches_per_epoch": len(make_loader(dataset)),
        "model": "MLP flatten-512-ReLU-512-ReLU-10",
        "optimizer": {"name": "SGD", "lr": LEARNING_RATE, "momentum": MOMENTUM},
        "loss": "fd-kl",
        "bcml_lambda": BCML_LAMBDA,
        "seeds": {
            "shuffle": SHUFFLE_SEED,
            "new_model": NEW_MODEL_SEED,
            "old_model": OLD_MODEL_SEED,
        },
        "old_model_train_accuracy": old_accuracy,
        "repeats": args.repeats,
        "variants": {key: VARIANTS[key] for key in variants},
        "seconds_per_epoch": {
            key: {"median": medians[key], "min": min(times), "all": times}
            for key, times in seconds.items()
        },
        "ratio_to_plain": ratios,
        "live_minus_cached_over_teacher_forward": live_extra,
        "goals": goals,
    }
    write_atomically(args.output, json.dumps(result, indent=2) + "\n")
    notes = []
    if "c" in goals:
        notes.append(f"(c)'s goal is 1 + t/a = 1 + {medians['t']:.3f}/{medians['a']:.3f}")
    if live_extra is not None:
        notes.append(
            f"(c − b)/t = {live_extra:.2f} (1 when the live teacher costs its forward and no more)"
        )
    print(
        f"{data_name}: {len(y):,} samples, batch {BATCH_SIZE}, {torch.get_num_threads()} threads, "
        f"{args.repeats} repeats (old model train accuracy {old_accuracy:.3f}; "
        f"load average {load_before:.1f} before, {load_after:.1f} after)\n\n"
        f"{markdown_table(seconds, ratios, goals)}\n\n"
        + "".join(f"{note}.\n" for note in notes)
        + f"wrote {args.output}"
    )


if __name__ == "__main__":
    main()
