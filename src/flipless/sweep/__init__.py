"""Sweeps: a grid of compatible updates (method × strength × seed), resumable, and its results.

::

    from flipless.sweep import load_sweep_config, run_sweep, read_records, pareto_front
    outcome = run_sweep(load_sweep_config("sweep.toml"))        # again after a crash: resumes
    records = read_records(outcome.store)
    pareto_front(records, x="negative_flip_rate", y="accuracy", split="dev")
    select_point(records, "min-nfr-within:0.005")               # chosen on dev, mean over seeds
    summarise(records)                                          # mean ± std over seeds

Names are imported on first use, so that reading a store (:mod:`flipless.sweep.store`) needs
neither torch nor the training code. See docs/sweep.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MethodGrid": "flipless.sweep.config",
    "SweepConfig": "flipless.sweep.config",
    "load_sweep_config": "flipless.sweep.config",
    "parse_sweep_config": "flipless.sweep.config",
    "SweepPoint": "flipless.sweep.grid",
    "sweep_points": "flipless.sweep.grid",
    "ResultsStore": "flipless.sweep.store",
    "read_records": "flipless.sweep.store",
    "SweepOutcome": "flipless.sweep.runner",
    "run_sweep": "flipless.sweep.runner",
    "PointSelection": "flipless.sweep.pareto",
    "pareto_front": "flipless.sweep.pareto",
    "select_point": "flipless.sweep.pareto",
    "summarise": "flipless.sweep.pareto",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flipless.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
