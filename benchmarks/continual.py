"""Does soft-masking protect old tasks when one model learns a sequence of tasks?

Task sequence: scikit-learn's handwritten digits (default) or Fashion-MNIST (``--data
fashion-mnist``, the Debian package dataset-fashion-mnist; ``--per-class`` images of each
class) split into 5 tasks of 2 classes each, (0, 1), (2, 3), …, (8, 9), learned one after the
other by one MLP (flatten → 256 → ReLU → 10 classes, one shared head), ``--epochs`` epochs per
task, batch 32, the last epoch kept. Methods, each with SGD (lr 0.05, momentum 0.9) and with
AdamW (lr 1e-3, weight decay 0.01):

(a) ``plain``: fine-tune on each task in turn;
(b) ``soft-mask``: after each task, the importance of every Linear layer from its training
    data (task loss), per unit (output row) or per parameter, accumulated by maximum; the next
    tasks' gradients are multiplied by ``1 − importance`` once per optimizer step
    (:class:`flipless.continual.SoftMask`);
(c) ``soft-mask-update``: the same importance, optimizer-aware: the update itself is scaled;
(d) ``sub-network``: the Linear layers become :class:`~flipless.continual.PopupLinear`
    (frozen signed constants, popup scores per task copied from the previous task, Adam lr
    0.01 on the scores); each task is evaluated with its own scores (the task id is given at
    inference); ``sub-network+soft-mask``: the same, the new task's scores soft-masked in
    update mode by the importance of the earlier tasks.

Evaluation, after each stage on every task's test split: *task-incremental* accuracy (the task
id is known: argmax over the task's two classes; the setting of TSS and of (d)) and, for
(a)–(c), *class-incremental* accuracy (argmax over all 10 classes). With ``R[i][j]`` the
accuracy on task j after training task i (T tasks):

* final average accuracy ``A = (1/T) Σ_j R[T−1][j]``;
* average forgetting ``F = 1/(T−1) Σ_{j<T−1} (max_{i<T−1} R[i][j] − R[T−1][j])``
  (Chaudhry et al., ECCV 2018);
* backward transfer ``BWT = 1/(T−1) Σ_{j<T−1} (R[T−1][j] − R[j][j])`` (Lopez-Paz & Ranzato,
  NeurIPS 2017);
* NFR on task 1: the share of task 1's test samples right after stage 1 and wrong at the end
  (:func:`flipless.compare`, old = the model after task 1, new = the final model).

3 seeds (``--seeds``); mean ± std per method and optimizer. Goal (issue 6): (b) or (c) cuts the
average forgetting of (a) by at least half at a final average accuracy within 2 points of it
(not more than 2 points lower), judged on task-incremental accuracy with the same optimizer.

Usage: python benchmarks/continual.py [--data digits|fashion-mnist] [--seeds 0 1 2]
       [--epochs 6] [--quick] [--output PATH]
Writes benchmarks/results/continual.json (``--quick``: one seed, 2 epochs, not written unless
``--output`` is given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from common import (
    add_output_options,
    chosen_methods,
    load_average,
    machine_facts,
    output_path,
    write_atomically,
)
from flipless import compare
from flipless.continual import SoftMasker, add_task, select_layers, to_subnetwork, use_task
from flipless.data.loaders import load_digits, load_fashion_mnist
from flipless.train import MLP, LabeledData, TrainSettings, fit

TASKS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
GRANULARITIES = ("unit", "parameter")
METHODS = ("plain", "soft-mask", "soft-mask-update", "sub-network", "sub-network+soft-mask")
OPTIMIZERS: dict[str, Callable[[object], torch.optim.Optimizer]] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}


def load_data(name: str, per_class: int) -> tuple[LabeledData, LabeledData]:
    """(train, test) of digits, or of a class-balanced Fashion-MNIST subset."""
    if name == "digits":
        splits = load_digits(seed=0)
        return splits["train"], splits["test"]
    splits = load_fashion_mnist()
    chosen = []
    for split, count in (("train", per_class), ("test", max(per_class // 5, 50))):
        labels = splits[split].labels.numpy()
        index = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(10)])
        chosen.append(splits[split].subset(np.sort(index)))
    return chosen[0], chosen[1]


def task_data(data: LabeledData, classes: tuple[int, int]) -> LabeledData:
    return data.subset(np.flatnonzero(np.isin(data.labels.numpy(), classes)))


def predictions(model: torch.nn.Module, data: LabeledData, classes: tuple[int, int] | None):
    """Predicted labels: over the task's classes (task-incremental) or all (class-incremental)."""
    model.eval()
    with torch.no_grad():
        logits = model(data.inputs)
    if classes is None:
        return logits.argmax(1).numpy()
    return np.asarray(classes)[logits[:, list(classes)].argmax(1).numpy()]


def run_sequence(
    method: str,
    optimizer: str,
    seed: int,
    train: LabeledData,
    test: LabeledData,
    epochs: int,
    granularity: str = "unit",
) -> dict[str, object]:
    """Train the 5 tasks in order; the accuracy matrices and the task-1 predictions."""
    torch.manual_seed(seed)
    in_features = int(np.prod(train.inputs.shape[1:]))
    model = MLP(in_features, 10, hidden=(256,))
    masker = None
    if method.startswith("sub-network"):
        to_subnetwork(model, select_layers(model), seed=seed)
        if method == "sub-network+soft-mask":
            masker = SoftMasker(model, granularity=granularity, mode="update")
        make_optimizer = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731
    else:
        make_optimizer = OPTIMIZERS[optimizer]
    if method in ("soft-mask", "soft-mask-update"):
        mode = "update" if method == "soft-mask-update" else "gradient"
        masker = SoftMasker(model, granularity=granularity, mode=mode)
    settings = TrainSettings(
        epochs=epochs, batch_size=32, progress="none", device="cpu", seed=seed, select="last"
    )
    tests = [task_data(test, classes) for classes in TASKS]
    task_incremental, class_incremental = [], []
    first_task: dict[str, np.ndarray] = {}
    for number, classes in enumerate(TASKS):
        data = task_data(train, classes)
        if method.startswith("sub-network") and number:
            add_task(model)
        hooks = [masker.hook()] if masker is not None and number else []
        fit(model, data, optimizer=make_optimizer, settings=settings, hooks=hooks, resume=False)
        if masker is not None:
            masker.learn(data, seed=seed)
        row_task, row_class = [], []
        for task_number, (task_test, task_classes) in enumerate(zip(tests, TASKS, strict=True)):
            labels = task_test.labels.numpy()
            if method.startswith("sub-network"):
                with use_task(model, min(task_number, number)):
                    predicted = predictions(model, task_test, task_classes)
                row_class.append(float("nan"))
            else:
                predicted = predictions(model, task_test, task_classes)
                row_class.append(float((predictions(model, task_test, None) == labels).mean()))
            row_task.append(float((predicted == labels).mean()))
            if task_number == 0 and number in (0, len(TASKS) - 1):
                first_task["after_first" if number == 0 else "final"] = predicted
        task_incremental.append(row_task)
        class_incremental.append(row_class)
    labels = tests[0].labels.numpy()
    nfr = compare(first_task["after_first"], first_task["final"], labels).negative_flip_rate
    protected = masker.protected_share() if masker is not None else None
    return {
        "task_incremental": task_incremental,
        "class_incremental": class_incremental,
        "nfr_task_1": float(nfr),
        "protected_share": protected,
    }


def summary_of(matrix: list[list[float]]) -> dict[str, float]:
    """Final average accuracy, average forgetting and backward transfer of R[i][j]."""
    r = np.asarray(matrix)
    last = len(r) - 1
    forgetting = [r[:last, j].max() - r[last, j] for j in range(last)]
    transfer = [r[last, j] - r[j, j] for j in range(last)]
    return {
        "final_average_accuracy": float(r[last].mean()),
        "average_forgetting": float(np.mean(forgetting)),
        "backward_transfer": float(np.mean(transfer)),
    }


def mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "fashion-mnist"), default="digits")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="one seed, 2 epochs")
    add_output_options(parser, "continual", METHODS, always=("plain",))
    args = parser.parse_args()
    methods = chosen_methods(args, METHODS, always=("plain",))
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 2
    output = None if args.quick and args.output is None else output_path(args, "continual")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    train, test = load_data(args.data, args.per_class)
    loads = {"start": load_average()}
    started = time.perf_counter()
    runs: dict[str, list[dict[str, object]]] = {}
    configurations = [("plain", "-", o) for o in OPTIMIZERS]
    configurations += [
        (m, g, o)
        for m in ("soft-mask", "soft-mask-update")
        for g in GRANULARITIES
        for o in OPTIMIZERS
    ]
    configurations.append(("sub-network", "-", "adam"))
    configurations += [("sub-network+soft-mask", g, "adam") for g in GRANULARITIES]
    configurations = [c for c in configurations if c[0] in methods]
    for method, granularity, optimizer in configurations:
        key = method if granularity == "-" else f"{method}[{granularity}]"
        key = f"{key}/{optimizer}"
        runs[key] = []
        for seed in args.seeds:
            run = run_sequence(method, optimizer, seed, train, test, args.epochs, granularity)
            run["seed"] = seed
            run["task_summary"] = summary_of(run["task_incremental"])
            if not method.startswith("sub-network"):
                run["class_summary"] = summary_of(run["class_incremental"])
            runs[key].append(run)
    loads["end"] = load_average()
    table = {}
    for key, seeds in runs.items():
        row = {}
        for setting in ("task_summary", "class_summary"):
            if setting in seeds[0]:
                row[setting] = {
                    name: mean_std([run[setting][name] for run in seeds])
                    for name in seeds[0][setting]
                }
        row["nfr_task_1"] = mean_std([run["nfr_task_1"] for run in seeds])
        table[key] = row
    goals = {}
    for optimizer in OPTIMIZERS:
        plain = table[f"plain/{optimizer}"]["task_summary"]
        for method in [
            f"{m}[{g}]"
            for m in ("soft-mask", "soft-mask-update")
            if m in methods
            for g in GRANULARITIES
        ]:
            ours = table[f"{method}/{optimizer}"]["task_summary"]
            cut = 1 - ours["average_forgetting"]["mean"] / plain["average_forgetting"]["mean"]
            accuracy_gap = (
                ours["final_average_accuracy"]["mean"] - plain["final_average_accuracy"]["mean"]
            )
            goals[f"{method}/{optimizer}"] = {
                "forgetting_cut": cut,
                "accuracy_difference": accuracy_gap,
                "met": bool(cut >= 0.5 and accuracy_gap >= -0.02),
            }
    print(f"{args.data}: 5 tasks × 2 classes, {args.epochs} epochs per task, seeds {args.seeds}")
    print(
        f"{'method/optimizer':40} {'A (task)':>14} {'F (task)':>14} {'BWT (task)':>14} "
        f"{'A (class)':>14} {'F (class)':>14} {'NFR task 1':>14}"
    )
    for key, row in table.items():
        cells = [
            row["task_summary"][n]
            for n in ("final_average_accuracy", "average_forgetting", "backward_transfer")
        ]
        if "class_summary" in row:
            cells += [
                row["class_summary"][n] for n in ("final_average_accuracy", "average_forgetting")
            ]
        else:
            cells += [None, None]
        cells.append(row["nfr_task_1"])
        text = [f"{c['mean']:7.3f}±{c['std']:.3f}" if c else f"{'—':>13}" for c in cells]
        print(f"{key:40} " + " ".join(f"{t:>14}" for t in text))
    for key, goal in goals.items():
        print(
            f"goal {key}: forgetting cut {goal['forgetting_cut']:.0%}, accuracy "
            f"{goal['accuracy_difference']:+.3f} → {'met' if goal['met'] else 'NOT met'}"
        )
    result = {
        "benchmark": "continual",
        "data": args.data,
        "tasks": [list(t) for t in TASKS],
        "epochs": args.epochs,
        "seeds": args.seeds,
        "train_size": len(train),
        "test_size": len(test),
        "table": table,
        "goals": goals,
        "runs": runs,
        "seconds": time.perf_counter() - started,
        "machine": machine_facts(loads),
    }
    if output is not None:
        write_atomically(output, json.dumps(result, indent=2) + "\n")
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
