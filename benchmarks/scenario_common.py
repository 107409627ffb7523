"""What every benchmark scenario shares: its command line, seeds and mean ± std, the test
metrics of a comparison, the goal of issue 8, the JSON result and ``docs/RESULTS.md``.

Each scenario script (``benchmarks/scenario_<name>.py``) runs every method for several seeds,
keeps per seed the test metrics of each method against the old model, and calls
:func:`finish`, which prints the table, evaluates the goal, writes the JSON (with
``--publish``: ``benchmarks/results/scenario_<name>.json``, and then regenerates
``docs/RESULTS.md`` from *all* scenario results present, plus ``continual.json``, so every
script rewrites the whole file the same way; otherwise ``benchmarks/out/``).

The goal (issue 8): the best compatible method — the lowest mean test NFR among the methods
whose mean test accuracy is at least the plain new model's minus 0.3 points — lowers the
plain new model's NFR by at least 40 %. Both numbers are reported, met or not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from common import add_output_options, load_average, machine_facts, output_path, write_atomically
from flipless import Comparison

BENCHMARKS = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS / "results"
RESULTS_MD = BENCHMARKS.parent / "docs" / "RESULTS.md"
#: The goal of issue 8: NFR cut by at least this share, accuracy at most this much lower.
GOAL_NFR_CUT = 0.40
GOAL_ACCURACY_TOLERANCE = 0.003
#: The test metrics kept for every method (attributes of a Comparison), in table order.
METRICS = (
    "accuracy_new",
    "negative_flip_rate",
    "relative_negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)
HEADINGS = {
    "accuracy_old": "old acc.",
    "accuracy_new": "accuracy",
    "negative_flip_rate": "NFR",
    "relative_negative_flip_rate": "rel. NFR",
    "positive_flip_rate": "PFR",
    "backward_trust_compatibility": "BTC",
    "backward_error_compatibility": "BEC",
    "seconds": "time (s)",
    "old_weight": "α (old weight)",
    "lambda": "λ",
}
#: Shown as percentages in the tables.
PERCENT = {
    "accuracy_old",
    "accuracy_new",
    "negative_flip_rate",
    "relative_negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
}


def parse_args(
    doc: str,
    name: str,
    quick_seconds: str = "3 minutes",
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """``--quick`` (one seed, fewer epochs; written only with ``--output``), ``--seeds``,
    ``--output`` (default ``benchmarks/out/scenario_<name>.json``), ``--publish`` (write
    ``benchmarks/results/scenario_<name>.json`` and regenerate docs/RESULTS.md), ``--methods``
    (a subset; ``plain`` is always run), ``--no-report``, and the scenario's own options added
    by ``extra(parser)``."""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--quick", action="store_true", help=f"one seed, fewer epochs (under {quick_seconds})"
    )
    add_output_options(parser, f"scenario_{name}")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        default=None,
        help="run only these methods (default: all; plain, the reference, always runs)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
    if args.publish or args.output is not None or not args.quick:
        args.output = output_path(args, f"scenario_{name}")
    return args


def device() -> str:
    """``"cuda"`` when a GPU is present, else ``"cpu"`` with :func:`cpu_threads` threads."""
    if torch.cuda.is_available():
        return "cuda"
    torch.set_num_threads(cpu_threads())
    return "cpu"


def cpu_threads() -> int:
    """Torch threads on the CPU: 2 (the CI machine's cores), or 1 when the load average
    already exceeds the cores — a second thread then waits at every barrier for a core and a
    step takes about twice as long (measured on this machine at load 8)."""
    cores = os.cpu_count() or 1
    return 1 if load_average() > cores else min(2, cores)


def mean_std(values: Iterable[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value); NaN values make both NaN."""
    values = [float(v) for v in values]
    if not values or any(math.isnan(v) for v in values):
        return {"mean": math.nan, "std": math.nan}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def test_metrics(comparison: Comparison) -> dict[str, float | int]:
    """The test metrics of one method against the old model (``METRICS`` and the counts)."""
    row: dict[str, float | int] = {"accuracy_old": float(comparison.accuracy_old)}
    for name in METRICS:
        row[name] = float(getattr(comparison, name))
    row["negative_flips"] = int(comparison.negative_flips)
    row["samples"] = int(comparison.counts.total)
    return row


def summarise(
    runs: Sequence[Mapping[str, Mapping[str, Any]]], keys: Sequence[str] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-seed ``{row: {metric: value}}`` → ``{row: {metric: {"mean", "std"}}}`` over seeds.

    Only numeric metrics present in every seed are summarised; rows keep their first order.
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for row in runs[0]:
        names = keys or [
            key
            for key, value in runs[0][row].items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        table[row] = {
            name: mean_std(run[row][name] for run in runs)
            for name in names
            if all(name in run[row] for run in runs)
        }
    return table


def evaluate_goal(
    table: Mapping[str, Mapping[str, Mapping[str, float]]],
    plain: str,
    candidates: Sequence[str],
) -> dict[str, Any]:
    """The goal of issue 8 on one table of mean test metrics.

    best = the candidate with the lowest mean NFR among those with mean accuracy ≥ plain's −
    ``GOAL_ACCURACY_TOLERANCE``; met when its NFR is at least ``GOAL_NFR_CUT`` below plain's.
    The lowest-NFR candidate without the accuracy condition is reported beside it.
    """
    reference = table[plain]
    plain_nfr = reference["negative_flip_rate"]["mean"]
    plain_accuracy = reference["accuracy_new"]["mean"]

    def entry(name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        nfr = table[name]["negative_flip_rate"]["mean"]
        accuracy = table[name]["accuracy_new"]["mean"]
        return {
            "method": name,
            "negative_flip_rate": nfr,
            "accuracy": accuracy,
            "nfr_cut": 1 - nfr / plain_nfr if plain_nfr > 0 else math.nan,
            "accuracy_difference": accuracy - plain_accuracy,
        }

    allowed = [
        name
        for name in candidates
        if table[name]["accuracy_new"]["mean"] >= plain_accuracy - GOAL_ACCURACY_TOLERANCE - 1e-12
    ]
    best = min(allowed, key=lambda n: table[n]["negative_flip_rate"]["mean"], default=None)
    lowest = min(candidates, key=lambda n: table[n]["negative_flip_rate"]["mean"], default=None)
    best_entry = entry(best)
    return {
        "rule": (
            f"lowest mean test NFR among methods with mean accuracy ≥ plain − "
            f"{GOAL_ACCURACY_TOLERANCE}; met when NFR is ≥ {GOAL_NFR_CUT:.0%} below plain's"
        ),
        "plain": {"method": plain, "negative_flip_rate": plain_nfr, "accuracy": plain_accuracy},
        "best_compatible": best_entry,
        "lowest_nfr_any_accuracy": entry(lowest),
        "met": bool(best_entry is not None and best_entry["nfr_cut"] >= GOAL_NFR_CUT),
    }


def cell(value: Mapping[str, float] | None, metric: str) -> str:
    """``mean ± std`` as text: percentages with 2 decimals, seconds with 1, else 3."""
    if value is None or math.isnan(value["mean"]):
        return "—"
    mean, std = value["mean"], value["std"]
    if metric in PERCENT:
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    if metric == "seconds":
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.3g} ± {std:.2g}"


def markdown_table(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str],
    first: str = "method",
) -> list[str]:
    """A markdown table, one row per entry of ``rows``, cells ``mean ± std`` (see :func:`cell`)."""
    lines = [
        "| " + " | ".join([first, *(HEADINGS.get(m, m) for m in metrics)]) + " |",
        "|" + "---|" * (len(metrics) + 1),
    ]
    for name, values in rows.items():
        lines.append("| " + " | ".join([name, *(cell(values.get(m), m) for m in metrics)]) + " |")
    return lines


def goal_lines(goal: Mapping[str, Any], label: str = "") -> list[str]:
    """The goal as a sentence: which method is best, its NFR cut and accuracy change, met or not."""
    plain = goal["plain"]
    best = goal["best_compatible"]
    prefix = f"{label}: " if label else ""
    if best is None:
        return [f"- {prefix}goal **not met**: no compatible method keeps the accuracy."]
    verdict = "**met**" if goal["met"] else "**not met**"
    text = (
        f"- {prefix}goal {verdict}: best compatible method `{best['method']}`, NFR "
        f"{100 * plain['negative_flip_rate']:.2f} % → {100 * best['negative_flip_rate']:.2f} % "
        f"({100 * best['nfr_cut']:+.1f} % cut; goal ≥ {100 * GOAL_NFR_CUT:.0f} %), accuracy "
        f"{100 * plain['accuracy']:.2f} % → {100 * best['accuracy']:.2f} % "
        f"({100 * best['accuracy_difference']:+.2f} points)"
    )
    lowest = goal["lowest_nfr_any_accuracy"]
    if lowest is not None and lowest["method"] != best["method"]:
        text += (
            f"; lowest NFR at any accuracy: `{lowest['method']}` "
            f"{100 * lowest['negative_flip_rate']:.2f} % at {100 * lowest['accuracy']:.2f} % "
            f"accuracy ({100 * lowest['accuracy_difference']:+.2f} points)"
        )
    return [text + "."]


def write_html_report(
    comparisons: Mapping[str, Comparison], output: Path | None, title: str, **inputs: Any
) -> str | None:
    """The interactive report (``flipless.report.write_report``) of several new models
    against one old model, beside the JSON (``<output stem>.html``); ``inputs``: ``inputs=``
    (images) or ``texts=``. Returns the file name, or None when no output is written."""
    if output is None:
        return None
    from flipless.report import write_report

    path = write_report(dict(comparisons), output.with_suffix(".html"), title=title, **inputs)
    print(f"wrote {path}")
    return Path(path).name


class Timer:
    """Wall-clock seconds since construction, and the load average at start and end."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.loads = {"start": load_average()}

    def finish(self) -> tuple[float, dict[str, float]]:
        self.loads["end"] = load_average()
        return time.perf_counter() - self.started, self.loads


def finish(result: dict[str, Any], output: Path | None, lines: Sequence[str]) -> None:
    """Print ``lines`` (the scenario's tables), then write ``result`` as JSON to ``output``
    (when given) and, when ``output`` lies in ``benchmarks/results``, regenerate
    ``docs/RESULTS.md`` from every scenario result there."""
    print("\n".join(lines))
    if output is None:
        return
    write_atomically(output, json.dumps(result, indent=2, allow_nan=True) + "\n")
    print(f"wrote {output}")
    if output.resolve().parent == RESULTS_DIR:
        write_atomically(RESULTS_MD, render_results(RESULTS_DIR))
        print(f"wrote {RESULTS_MD}")


def versions() -> dict[str, str]:
    """Versions of python, torch, numpy and flipless, for the JSON record."""
    import numpy

    import flipless

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "flipless": getattr(flipless, "__version__", "unknown"),
    }


def record(
    name: str, args: Any, config: Mapping[str, Any], timer: Timer, **content: Any
) -> dict[str, Any]:
    """The JSON record of a scenario run: name, command, config, versions, seeds, machine,
    timing, and the scenario's own ``content`` (per-seed runs, tables, goals, notes)."""
    seconds, loads = timer.finish()
    return {
        "benchmark": f"scenario_{name}",
        "command": " ".join(["python", f"benchmarks/scenario_{name}.py", *sys.argv[1:]]),
        "quick": bool(args.quick),
        "seeds": list(args.seeds),
        "config": dict(config),
        "versions": versions(),
        **content,
        "seconds": seconds,
        "machine": machine_facts(loads),
    }


# ----------------------------------------------------------------------------- docs/RESULTS.md

SCENARIO_ORDER = ("tabular", "fashion_mnist", "massive", "banking77")


def render_results(results_dir: Path) -> str:
    """The whole of docs/RESULTS.md from the scenario JSON files in ``results_dir``."""
    lines = [
        "# Benchmark scenarios: results",
        "",
        "<!-- Generated file: do not edit. Each `python benchmarks/scenario_<name>.py` rewrites it",
        "     from every benchmarks/results/scenario_*.json present and continual.json. -->",
        "",
        "Every number below comes from a script in `benchmarks/` and its JSON in",
        "`benchmarks/results/` (config, versions, seeds, per-seed metrics, timing). Test metrics",
        "of each method against the old model, mean ± std over the seeds; NFR, relative NFR",
        "(NFR / (acc_old · (1 − acc_new))), PFR, BTC and BEC as in `docs/metrics.md`. λ, α and",
        "kept epochs are chosen on validation (dev) splits by the stated rules, never on test.",
        "Goal of issue 8 on every scenario: the best compatible method (lowest mean NFR among",
        f"methods with mean accuracy ≥ the plain new model's − {100 * GOAL_ACCURACY_TOLERANCE:g}",
        f"points) cuts the plain new model's NFR by ≥ {100 * GOAL_NFR_CUT:.0f} %.",
        "",
    ]
    found = {
        path.stem.removeprefix("scenario_"): json.loads(path.read_text())
        for path in sorted(results_dir.glob("scenario_*.json"))
    }
    order = [n for n in SCENARIO_ORDER if n in found] + sorted(set(found) - set(SCENARIO_ORDER))
    for name in order:
        lines += render_scenario(found[name])
    continual = results_dir / "continual.json"
    if continual.exists():
        lines += render_continual(json.loads(continual.read_text()))
    return "\n".join(lines).rstrip() + "\n"


def render_scenario(result: Mapping[str, Any]) -> list[str]:
    """One scenario's section: title, command, notes, its tables, goals and comparisons."""
    lines = [
        f"## {result['title']}",
        "",
        f"`{result['command']}` — seeds {result['seeds']}, {result['seconds'] / 60:.1f} min on "
        f"{result['machine']['processor']} (torch threads: {result['machine']['torch_threads']}, "
        f"load {result['machine']['load_average_1min']['start']:.1f}–"
        f"{result['machine']['load_average_1min']['end']:.1f})"
        + (" — **quick mode** (not the full run)" if result.get("quick") else "")
        + (
            f" — **partial**: the run was stopped after seeds {result['seeds']} of "
            f"{result['seeds_requested']}"
            if result.get("seeds_requested", result["seeds"]) != result["seeds"]
            else ""
        )
        + ".",
        "",
    ]
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if result.get("report"):
        lines.append(
            f"- Interactive report (seed {result['seeds'][0]}, test split): "
            f"`benchmarks/results/{result['report']}`."
        )
    lines.append("")
    for section in result["sections"]:
        lines += [f"### {section['title'][:1].upper()}{section['title'][1:]}", ""]
        lines += markdown_table(
            section["table"], section["metrics"], section.get("first", "method")
        )
        lines.append("")
        for text in section.get("notes", []):
            lines.append(text)
        if section.get("notes"):
            lines.append("")
        if "goal" in section:
            lines += goal_lines(section["goal"])
            lines.append("")
    for text in result.get("published", []):
        lines.append(f"- {text}")
    if result.get("published"):
        lines.append("")
    return lines


def render_continual(result: Mapping[str, Any]) -> list[str]:
    """The continual benchmark's table (issue 6; not rerun here) from ``continual.json``."""
    lines = [
        "## Scenario 5: continual fine-tuning (soft-masking)",
        "",
        f"`python benchmarks/continual.py` — {result['data']}, {len(result['tasks'])} tasks, "
        f"{result['epochs']} epochs per task, seeds {result['seeds']}, "
        f"{result['seconds'] / 60:.1f} min (details: docs/continual.md). Task-incremental "
        "final average accuracy and average forgetting; NFR on task 1 (after task 1 → final).",
        "",
        "| method / optimizer | final accuracy | forgetting | NFR task 1 |",
        "|---|---|---|---|",
    ]
    for key, row in result["table"].items():
        task = row["task_summary"]
        lines.append(
            f"| {key} | {cell(task['final_average_accuracy'], 'accuracy_new')} | "
            f"{cell(task['average_forgetting'], 'accuracy_new')} | "
            f"{cell(row['nfr_task_1'], 'negative_flip_rate')} |"
        )
    lines.append("")
    lines.append(
        "Goal (issue 6: forgetting at least halved at a final accuracy within 2 points of plain):"
    )
    for key, goal in result["goals"].items():
        verdict = "met" if goal["met"] else "not met"
        lines.append(
            f"- {key}: forgetting cut {100 * goal['forgetting_cut']:.0f} %, accuracy "
            f"{100 * goal['accuracy_difference']:+.1f} points — {verdict}."
        )
    lines.append("")
    return lines
