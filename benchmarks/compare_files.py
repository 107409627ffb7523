"""How much does comparing two prediction files cost beyond a plain pandas sort-and-join?

Writes an old and a new Parquet file of ``--rows`` predictions (columns id, label, pred; 50
classes; ids shuffled differently in each file), then measures, each stage in a fresh process
so that its peak resident size is its own:

* baseline: ``pd.read_parquet`` of both files, ``sort_values("id")`` of each, a merge on id
  (without ``validate=``: no check that ids are unique, which flipless does make), and the
  same counts as flipless (the six dataset counts and the per-class outcome table);
* flipless: ``flipless.compare_files(old, new)`` and the same counts from the Comparison;
* cli: ``flipless compare OLD NEW --json out.json`` end to end (a subprocess, import time
  included), and the size of the JSON it writes.

Each stage reports its wall time, its peak resident size (``ru_maxrss``) and that peak above
the process's size after its imports, divided by the bytes of the columns it reads (both
files' id, label and pred as int64: 48 bytes a row). Goals (issue 17 §4): flipless ≤ 1.5× the
baseline's time, measured in the same run; the in-memory path ≤ 4× the bytes of the columns
it reads; the JSON a summary whose size does not grow with the rows.

Usage: python benchmarks/compare_files.py [--rows N] [--classes K] [--publish]
(default 2,000,000 rows, under 2 minutes on 2 cores; the issue's size is ``--rows 10000000``).
``--publish`` writes benchmarks/results/compare_files.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import load_average, machine_facts, write_atomically

RESULTS = Path(__file__).parent / "results" / "compare_files.json"
COUNT_NAMES = (
    "total",
    "both_correct",
    "negative_flips",
    "positive_flips",
    "both_wrong_same",
    "both_wrong_different",
)
COLUMN_BYTES_PER_ROW = 2 * 3 * 8  # id, label, pred as int64, in each of the two files


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """The peak resident size (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(who).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """The resident size now, from /proc/self/statm (pages)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def write_files(folder: Path, rows: int, classes: int, seed: int) -> tuple[Path, Path]:
    """Old and new prediction files: the old model right 80 %, the new 85 %, ids shuffled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    paths = []
    for name, accuracy in (("old", 0.80), ("new", 0.85)):
        wrong = rng.random(rows) >= accuracy
        predicted = np.where(wrong, (labels + rng.integers(1, classes, rows)) % classes, labels)
        order = rng.permutation(rows)
        table = pa.table(
            {
                "id": order.astype(np.int64),
                "label": labels[order],
                "pred": predicted[order],
            }
        )
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths[0], paths[1]


def counts_from_codes(codes: np.ndarray, labels: np.ndarray, classes: int) -> dict[str, Any]:
    """The six dataset counts and the [K, 4] table of (old right, new right) per class."""
    old_right, new_right = codes & 1, (codes >> 1) & 1
    table = np.bincount(labels * 4 + old_right + 2 * new_right, minlength=classes * 4)
    per_class = table.reshape(classes, 4)
    return {"per_class": per_class.tolist(), "right": [int(old_right.sum()), int(new_right.sum())]}


def stage_baseline(old_path: Path, new_path: Path, classes: int) -> dict[str, Any]:
    """The plain pandas sort-and-join, with the same counts."""
    import pandas as pd

    start = time.perf_counter()
    old = pd.read_parquet(old_path).sort_values("id")
    new = pd.read_parquet(new_path).sort_values("id")
    joined = old.merge(new, on="id", suffixes=("_old", "_new"))  # no uniqueness check
    labels = joined["label_old"].to_numpy()
    if not np.array_equal(labels, joined["label_new"].to_numpy()):
        raise SystemExit("the files disagree on labels")
    old_pred, new_pred = joined["pred_old"].to_numpy(), joined["pred_new"].to_numpy()
    old_right, new_right = old_pred == labels, new_pred == labels
    both_wrong = ~old_right & ~new_right
    counts = {
        "total": int(labels.size),
        "both_correct": int((old_right & new_right).sum()),
        "negative_flips": int((old_right & ~new_right).sum()),
        "positive_flips": int((~old_right & new_right).sum()),
        "both_wrong_same": int((both_wrong & (old_pred == new_pred)).sum()),
        "both_wrong_different": int((both_wrong & (old_pred != new_pred)).sum()),
    }
    codes = old_right.astype(np.int64) + 2 * new_right.astype(np.int64)
    tables = counts_from_codes(codes, labels, classes)
    return {"seconds": time.perf_counter() - start, "counts": counts, **tables}


def stage_flipless(old_path: Path, new_path: Path, classes: int) -> dict[str, Any]:
    """flipless.compare_files, with the same counts."""
    from flipless.io import compare_files

    start = time.perf_counter()
    comparison = compare_files(old_path, new_path)
    counts = comparison.counts.as_dict()
    kept = comparison.instances
    tables = counts_from_codes(kept.codes.astype(np.int64), kept.labels, classes)
    return {"seconds": time.perf_counter() - start, "counts": counts, **tables}


def stage_cli(old_path: Path, new_path: Path, classes: int) -> dict[str, Any]:
    """``flipless compare --json`` in a subprocess: wall time, the child's peak, the JSON."""
    out = old_path.parent / "comparison.json"
    command = [sys.executable, "-m", "flipless.cli", "compare", str(old_path), str(new_path)]
    start = time.perf_counter()
    subprocess.run([*command, "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    document = json.loads(out.read_text())
    return {
        "seconds": seconds,
        "counts": document["counts"],
        "json_bytes": out.stat().st_size,
        "child_peak_rss_bytes": peak_rss_bytes(resource.RUSAGE_CHILDREN),
    }


STAGES = {"baseline": stage_baseline, "flipless": stage_flipless, "cli": stage_cli}


def run_stage(name: str, old_path: Path, new_path: Path, classes: int) -> dict[str, Any]:
    """Run one stage here (the ``--stage`` mode) and measure its memory above the imports."""
    import pandas  # noqa: F401  (imported by both in-process stages; counted in the base)

    import flipless  # noqa: F401

    base = current_rss_bytes()
    found = STAGES[name](old_path, new_path, classes)
    peak = found.pop("child_peak_rss_bytes", None) or peak_rss_bytes()
    rows = found["counts"]["total"]
    return found | {
        "peak_rss_bytes": peak,
        "base_rss_bytes": base if name != "cli" else None,
        "peak_over_column_bytes": None
        if name == "cli"
        else (peak - base) / (rows * COLUMN_BYTES_PER_ROW),
    }


def in_fresh_process(name: str, old_path: Path, new_path: Path, classes: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--stage", name, str(old_path), str(new_path)]
    done = subprocess.run([*command, "--classes", str(classes)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"stage {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--publish", action="store_true", help=f"write {RESULTS}")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.stage:
        found = run_stage(arguments.stage, *arguments.paths, arguments.classes)
        print(json.dumps(found))
        return

    loads = {"start": load_average()}
    with tempfile.TemporaryDirectory(prefix="flipless-compare-files-") as scratch:
        old_path, new_path = write_files(
            Path(scratch), arguments.rows, arguments.classes, arguments.seed
        )
        print(f"wrote {arguments.rows:,} rows per file to {scratch}", file=sys.stderr)
        found = {}
        for name in STAGES:
            found[name] = in_fresh_process(name, old_path, new_path, arguments.classes)
            stage = found[name]
            print(
                f"{name:>9}: {stage['seconds']:7.2f} s, peak {stage['peak_rss_bytes'] / 2**30:5.2f}"
                " GiB" + (f", JSON {stage['json_bytes']:,} bytes" if "json_bytes" in stage else ""),
                file=sys.stderr,
            )
        loads["end"] = load_average()
    baseline, ours, cli = found["baseline"], found["flipless"], found["cli"]
    for name in ("flipless", "cli"):
        if found[name]["counts"] != baseline["counts"]:
            raise SystemExit(f"{name} counts {found[name]['counts']} != {baseline['counts']}")
    if ours["per_class"] != baseline["per_class"]:
        raise SystemExit("flipless per-class counts differ from the baseline's")
    result = {
        "benchmark": "compare_files",
        "rows": arguments.rows,
        "classes": arguments.classes,
        "seed": arguments.seed,
        "counts": baseline["counts"],
        "seconds": {name: stage["seconds"] for name, stage in found.items()},
        "peak_rss_bytes": {name: stage["peak_rss_bytes"] for name, stage in found.items()},
        "peak_over_column_bytes": {
            name: found[name]["peak_over_column_bytes"] for name in ("baseline", "flipless")
        },
        "json_bytes": cli["json_bytes"],
        "ratios": {
            "flipless_over_baseline": ours["seconds"] / baseline["seconds"],
            "cli_over_baseline": cli["seconds"] / baseline["seconds"],
        },
        "goals": {"flipless_over_baseline": 1.5, "flipless_peak_over_column_bytes": 4.0},
        "machine": machine_facts(loads),
    }
    print(json.dumps(result, indent=1))
    if arguments.publish:
        write_atomically(RESULTS, json.dumps(result, indent=1) + "\n")
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
