"""What every benchmark records about the machine, and how it writes its results.

The benchmark scripts run as ``python benchmarks/<name>.py``, so this folder is on the import
path and they import these helpers as ``from common import ...``.

Where results go (:func:`add_output_options`, :func:`output_path`): by default to
``benchmarks/out/`` (git-ignored), so that a rerun never overwrites the published results;
``--publish`` writes ``benchmarks/results/`` (and what is generated from it), ``--output``
any other path. Scripts with a list of methods take ``--methods`` to run a subset
(:func:`chosen_methods`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
#: The published results, checked in; written only with ``--publish``.
PUBLISHED = BENCHMARKS / "results"
#: Where a run writes by default (git-ignored).
SCRATCH = BENCHMARKS / "out"


def add_output_options(
    parser: argparse.ArgumentParser,
    name: str,
    methods: Sequence[str] = (),
    always: Sequence[str] = (),
) -> None:
    """``--output``, ``--publish`` and, when the script has ``methods``, ``--methods``; its
    help names ``always``, the baseline that runs whatever is chosen."""
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where the JSON goes (default: benchmarks/out/{name}.json, not checked in)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"write the published benchmarks/results/{name}.json (and docs generated from it)",
    )
    if methods:
        baseline = (
            f"; {', '.join(always)} always runs, the baseline the ratios are measured against"
            if always
            else ""
        )
        parser.add_argument(
            "--methods",
            nargs="+",
            metavar="METHOD",
            default=None,
            help=f"run only these methods (default: all): {', '.join(methods)}{baseline}",
        )


def output_path(args: argparse.Namespace, name: str) -> Path:
    """``--output``, else ``benchmarks/results/<name>.json`` with ``--publish``, else
    ``benchmarks/out/<name>.json``."""
    if args.output is not None and args.publish:
        raise SystemExit("give --output or --publish, not both")
    if args.output is not None:
        return args.output
    return (PUBLISHED if args.publish else SCRATCH) / f"{name}.json"


def chosen_methods(
    args: argparse.Namespace, methods: Sequence[str], always: Sequence[str] = ()
) -> tuple[str, ...]:
    """The methods of ``--methods`` (all of ``methods`` without it), in the script's order;
    ``always`` (the reference a table is measured against) is kept in any case."""
    wanted = getattr(args, "methods", None)
    if not wanted:
        return tuple(methods)
    unknown = [method for method in wanted if method not in methods]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; expected some of {list(methods)}")
    return tuple(method for method in methods if method in wanted or method in always)


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The 1-minute load average (Unix): above the core count, other work competes for the
    cores and every timing is inflated, the ratios less so."""
    return os.getloadavg()[0]


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``
    (readable by all, as a plain file written under the usual umask 022 would be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def machine_facts(load_average_1min: dict[str, float]) -> dict[str, Any]:
    """Processor, versions, threads and cores, and the load averages seen during the run."""
    import torch

    return {
        "processor": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load_average_1min,
    }
