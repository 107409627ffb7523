"""How much memory and time does streaming interpolation of a multi-gigabyte checkpoint take?

A synthetic old checkpoint of ``--size-gb`` (default 2) GB of float32 tensors of ``--tensor-mb``
(default 64) MB, and a new one (old + 0.01 · noise, as after fine-tuning), are written with
:class:`~flipless.merge.streaming.SafetensorsWriter` (seeded) to a temporary folder. Each
measurement runs in a fresh subprocess, so that its peak resident memory (Linux ``VmHWM``,
reset through ``/proc/self/clear_refs`` after the imports) is its own:

* read, sequential: both files read once from start to end with ``read()`` into one reused
  64 MiB buffer (no arithmetic);
* read, mapped: every tensor of both files taken with ``safetensors.safe_open`` (reopened per
  tensor, so that mapped pages do not pile up) and summed, so that every byte is touched;
* write once: one checkpoint's worth of bytes written to a new file from one reused 64 MiB
  buffer: the least any merge must add to reading;
* stream: :func:`~flipless.merge.streaming.stream_merge` of old and new at old_weight 0.3 with
  :func:`~flipless.merge.tensors.merge_tensor` (the library's arithmetic, NaN checks included);
* stream, lerp: the same streaming with ``torch.lerp(new, old, 0.3)``, one pass and one output
  tensor: what streaming itself costs, with the least arithmetic;
* plain: ``safetensors.torch.load_file`` both checkpoints, ``merge_tensor`` every tensor,
  ``save_file`` the result: the load-everything approach.

Every measurement runs with the inputs in the page cache ("warm", as right after they were
written) and after evicting them (``posix_fadvise(DONTNEED)``, "cold": read from disk),
``--repeats`` times round-robin; the median time and the largest peak are reported. Writes go
to the page cache; ``os.sync()`` runs between measurements, outside the timing. The streamed
and the plain results are checked to be bit for bit equal.
"Read once" is the faster of the two reads; "I/O floor" is read once + write once. Memory is
the growth of the resident size over the subprocess's size after its imports (torch alone is
~0.4 GB, whatever the model).
Goals (issue 5): stream's peak growth ≤ 0.25 × checkpoint size; time ≤ 1.5 × read once.

``--methods stream plain`` measures only those modes; the two reads and write once, the floors
every ratio is measured against, always run. Goals are printed for the streaming modes that
ran, and streamed == plain is checked when both ran.

Usage: python benchmarks/merge_memory.py [--size-gb G] [--tensor-mb M] [--repeats R]
                                         [--workdir DIR] [--keep] [--methods MODE ...]
                                         [--output PATH | --publish]
Linux only. Needs 4 × size of free disk and, for the plain approach, 5 × size of free memory.
Writes benchmarks/out/merge_memory.json (the published benchmarks/results/merge_memory.json
with --publish).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import flipless
from common import add_output_options, chosen_methods, cpu_model, output_path, write_atomically
from flipless.merge.streaming import (
    SafetensorsWriter,
    TensorEntry,
    open_checkpoint,
    stream_merge,
)
from flipless.merge.tensors import merge_tensor

OLD_WEIGHT = 0.3
NEW_NOISE = 0.01
ROW = 4096  # float32 elements per row of every synthetic tensor
READ_CHUNK = 64 << 20
PEAK_GOAL = 0.25
TIME_GOAL = 1.5
MODES = {
    "read_sequential": "read, sequential read()",
    "read_mapped": "read, safe_open + sum",
    "write_once": "write once",
    "stream": "stream, merge_tensor",
    "stream_lerp": "stream, torch.lerp",
    "plain": "plain: load_file, merge, save_file",
}
#: The modes every ratio is measured against (read once, the I/O floor): always run.
FLOORS = ("read_sequential", "read_mapped", "write_once")
GIB = 2**30
MIB = 2**20


# ---------------------------------------------------------------- the measured work


def read_sequential(old: Path, new: Path, out: Path) -> None:
    buffer = memoryview(bytearray(READ_CHUNK))
    for path in (old, new):
        with path.open("rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def read_mapped(old: Path, new: Path, out: Path) -> None:
    for path in (old, new):
        with safe_open(path, framework="pt") as handle:
            names = list(handle.keys())
        for name in names:
            with safe_open(path, framework="pt") as handle:
                handle.get_tensor(name).sum()


def write_once(old: Path, new: Path, out: Path) -> None:
    buffer = memoryview(bytearray(READ_CHUNK))
    remaining = old.stat().st_size
    out.mkdir()
    with (out / "bytes").open("wb", buffering=0) as handle:
        while remaining > 0:
            remaining -= handle.write(buffer[: min(remaining, READ_CHUNK)])


def interpolate(name: str, old: torch.Tensor, news: list[torch.Tensor]) -> torch.Tensor:
    return merge_tensor(old, news, OLD_WEIGHT, name=name)


def stream(old: Path, new: Path, out: Path) -> None:
    stream_merge(old, [new], out, interpolate, max_shard_bytes=4 * GIB)


def stream_lerp(old: Path, new: Path, out: Path) -> None:
    stream_merge(
        old,
        [new],
        out,
        lambda name, o, ns: torch.lerp(ns[0], o, OLD_WEIGHT),
        max_shard_bytes=4 * GIB,
    )


def plain(old: Path, new: Path, out: Path) -> None:
    olds, news = load_file(old), load_file(new)
    merged = {name: interpolate(name, tensor, [news[name]]) for name, tensor in olds.items()}
    out.mkdir()
    save_file(merged, out / "model.safetensors", metadata={"format": "pt"})


WORK = {
    "read_sequential": read_sequential,
    "read_mapped": read_mapped,
    "write_once": write_once,
    "stream": stream,
    "stream_lerp": stream_lerp,
    "plain": plain,
}


def status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def worker(mode: str, old: Path, new: Path, out: Path, report: Path) -> None:
    """Run one measurement in this (fresh) process and write its figures to ``report``."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = status_bytes("VmRSS")
    start = time.perf_counter()
    WORK[mode](old, new, out)
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    figures = {
        "seconds": seconds,
        "rss_before": before,
        "peak_rss": peak,
        "peak_growth": peak - before,
    }
    write_atomically(report, json.dumps(figures))


# ---------------------------------------------------------------- set-up and driver


def meminfo_bytes(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/meminfo has no {field}")


def synthesise(folder: Path, size_bytes: int, tensor_bytes: int) -> tuple[Path, Path, float]:
    """Old (standard normal) and new (old + 0.01 · noise) checkpoints, written tensor by tensor."""
    rows = max(1, tensor_bytes // (4 * ROW))
    count = math.ceil(size_bytes / (rows * ROW * 4))
    entries = [TensorEntry(f"layers.{i}.weight", torch.float32, (rows, ROW)) for i in range(count)]
    old_path, new_path = folder / "old.safetensors", folder / "new.safetensors"
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    metadata = {"format": "pt"}
    with (
        SafetensorsWriter(old_path, entries, metadata=metadata) as old,
        SafetensorsWriter(new_path, entries, metadata=metadata) as new,
    ):
        for entry in entries:
            tensor = torch.randn(entry.shape, generator=generator)
            old.write(entry.name, tensor)
            tensor.add_(torch.randn(entry.shape, generator=generator), alpha=NEW_NOISE)
            new.write(entry.name, tensor)
    return old_path, new_path, time.perf_counter() - start


def evict(*paths: Path) -> None:
    """Drop the files' pages from the page cache (written back first), so reads hit the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(mode: str, old: Path, new: Path, out: Path) -> dict[str, Any]:
    report = out.parent / f"{out.name}.json"
    command = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        str(old),
        str(new),
        str(out),
        str(report),
    ]
    subprocess.run(command, check=True)
    figures = json.loads(report.read_text())
    report.unlink()
    return figures


def same_checkpoints(left: Path, right: Path) -> bool:
    """Bit-for-bit equality, tensor by tensor."""
    first, second = open_checkpoint(left), open_checkpoint(right)
    if first.tensors.keys() != second.tensors.keys():
        return False
    return all(
        torch.equal(stored.read(), second.tensors[name].read())
        for name, stored in first.tensors.items()
    )


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median time and largest peak over the repeats, with every run kept."""
    return {
        "seconds": statistics.median(run["seconds"] for run in runs),
        "peak_rss": max(run["peak_rss"] for run in runs),
        "peak_growth": max(run["peak_growth"] for run in runs),
        "runs": runs,
    }


def floors(by_mode: dict[str, dict]) -> tuple[float, float]:
    """Read once (the faster read) and the I/O floor (read once + write once), in seconds."""
    read_once = min(by_mode["read_sequential"]["seconds"], by_mode["read_mapped"]["seconds"])
    return read_once, read_once + by_mode["write_once"]["seconds"]


def markdown_table(figures: dict[str, dict[str, dict]], size: int) -> str:
    lines = [
        "| measurement | page cache | median s | ÷ read once | ÷ I/O floor | peak RSS MiB "
        "| peak growth MiB | growth ÷ size |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cache, by_mode in figures.items():
        read_once, io_floor = floors(by_mode)
        for mode, entry in by_mode.items():
            if "skipped" in entry:
                lines.append(f"| {MODES[mode]} | {cache} | skipped: {entry['skipped']} |||||")
                continue
            lines.append(
                f"| {MODES[mode]} | {cache} | {entry['seconds']:.2f} | "
                f"{entry['seconds'] / read_once:.2f}× | {entry['seconds'] / io_floor:.2f}× | "
                f"{entry['peak_rss'] / MIB:,.0f} | {entry['peak_growth'] / MIB:,.0f} | "
                f"{entry['peak_growth'] / size:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="checkpoint size in GB (10^9)")
    parser.add_argument("--tensor-mb", type=float, default=64.0, help="tensor size in MB (2^20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints")
    add_output_options(parser, "merge_memory", tuple(MODES), always=FLOORS)
    parser.add_argument("--worker", nargs=5, metavar=("MODE", "OLD", "NEW", "OUT", "REPORT"))
    args = parser.parse_args()
    args.output = output_path(args, "merge_memory")
    modes = chosen_methods(args, tuple(MODES), always=FLOORS)
    if args.worker:
        mode, *paths = args.worker
        worker(mode, *map(Path, paths))
        return

    size_request = int(args.size_gb * 1e9)
    args.workdir.mkdir(parents=True, exist_ok=True)
    free_disk = shutil.disk_usage(args.workdir).free
    if free_disk < 4 * size_request + GIB:
        raise SystemExit(
            f"merge_memory needs {(4 * size_request + GIB) / 1e9:.1f} GB free in {args.workdir} "
            f"(old, new, and two merged checkpoints of {args.size_gb} GB, plus 1 GB) but "
            f"{free_disk / 1e9:.1f} GB are free; pass --workdir on a larger disk or a smaller "
            "--size-gb."
        )
    available_memory = meminfo_bytes("MemAvailable")
    run_plain = "plain" in modes and available_memory >= 5 * size_request
    folder = Path(tempfile.mkdtemp(prefix="flipless-merge-memory-", dir=args.workdir))
    load_before = os.getloadavg()[0]
    try:
        old, new, synthesis_seconds = synthesise(folder, size_request, int(args.tensor_mb * MIB))
        size = old.stat().st_size
        count = len(open_checkpoint(old).tensors)
        print(f"synthesised 2 × {size / 1e9:.2f} GB ({count} tensors) in {synthesis_seconds:.0f} s")
        runs: dict[str, dict[str, list]] = {}
        equal: dict[str, bool] = {}
        for cache in ("warm", "cold"):
            runs[cache] = {mode: [] for mode in modes if mode != "plain" or run_plain}
            for repeat in range(args.repeats):
                for mode in runs[cache]:
                    os.sync()
                    if cache == "cold":
                        evict(old, new)
                    out = folder / f"{cache}-{mode}"
                    runs[cache][mode].append(measure(mode, old, new, out))
                    print(
                        f"  {cache} {repeat} {MODES[mode]:36s} {runs[cache][mode][-1]['seconds']:7.2f} s"
                    )
                    if repeat > 0 or mode not in ("stream", "plain"):
                        shutil.rmtree(out, ignore_errors=True)  # the reads write nothing
                if repeat == 0 and run_plain and "stream" in modes:
                    equal[cache] = same_checkpoints(
                        folder / f"{cache}-stream", folder / f"{cache}-plain"
                    )
                for mode in ("stream", "plain"):
                    shutil.rmtree(folder / f"{cache}-{mode}", ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    figures: dict[str, dict[str, dict]] = {}
    for cache, by_mode in runs.items():
        figures[cache] = {mode: summarise(mode_runs) for mode, mode_runs in by_mode.items()}
        if "plain" in modes and not run_plain:
            figures[cache]["plain"] = {
                "skipped": f"needs 5 × size of free memory, {available_memory / 1e9:.1f} GB free"
            }
    goals = {}
    for cache, by_mode in figures.items():
        read_once, io_floor = floors(by_mode)
        goals[cache] = {
            mode: {
                "peak_growth_over_size": by_mode[mode]["peak_growth"] / size,
                "peak_goal_met": by_mode[mode]["peak_growth"] / size <= PEAK_GOAL,
                "seconds_over_read_once": by_mode[mode]["seconds"] / read_once,
                "time_goal_met": by_mode[mode]["seconds"] / read_once <= TIME_GOAL,
                "seconds_over_io_floor": by_mode[mode]["seconds"] / io_floor,
            }
            for mode in ("stream", "stream_lerp")
            if mode in modes
        }
    result = {
        "benchmark": "merge_memory",
        "flipless_version": flipless.__version__,
        "machine": {
            "processor": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "memory_bytes": meminfo_bytes("MemTotal"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        },
        "checkpoint": {
            "bytes": size,
            "tensors": count,
            "tensor_bytes": size // count,
            "dtype": "float32",
            "seed": 0,
            "synthesis_seconds": synthesis_seconds,
        },
        "old_weight": OLD_WEIGHT,
        "repeats": args.repeats,
        "modes": {mode: MODES[mode] for mode in modes},
        "figures": figures,
        "stream_equals_plain": equal,
        "goals": {
            "peak_growth_over_size_at_most": PEAK_GOAL,
            "seconds_over_read_once_at_most": TIME_GOAL,
        },
        "results": goals,
    }
    write_atomically(args.output, json.dumps(result, indent=2) + "\n")
    print(markdown_table(figures, size))
    for cache, by_mode in goals.items():
        for mode, entry in by_mode.items():
            print(
                f"{cache} {MODES[mode]}: peak growth {entry['peak_growth_over_size']:.3f} × size "
                f"(goal ≤ {PEAK_GOAL}: {'met' if entry['peak_goal_met'] else 'NOT met'}), time "
                f"{entry['seconds_over_read_once']:.2f} × read once (goal ≤ {TIME_GOAL}: "
                f"{'met' if entry['time_goal_met'] else 'NOT met'}), "
                f"{entry['seconds_over_io_floor']:.2f} × the I/O floor"
            )
    if equal:
        print(f"streamed == plain, bit for bit: {equal}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
