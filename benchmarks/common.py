"""What every benchmark records about the machine, and how it writes its results.

The benchmark scripts run as ``python benchmarks/<name>.py``, so this folder is on the import
path and they import these helpers as ``from common import ...``.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any


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
