"""Interpolation of checkpoint files, streamed, and the old-weight search on a dev split.

What ``flipless interpolate`` runs: :func:`interpolate_files` merges an old checkpoint with
one or more new ones (a soup) tensor by tensor through
:func:`~flipless.merge.streaming.stream_merge`, so memory stays near the largest tensor;
:func:`select_for_files` evaluates a grid of old-weights on a dev split with
:func:`~flipless.merge.selection.select_old_weight` (the models must be flipless model files,
which record how to rebuild their architecture).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flipless.merge.interpolate import check_sources, interpolate, merge_tensors
from flipless.merge.policy import MergePolicy
from flipless.merge.selection import DEFAULT_GRID, WeightSelection, select_old_weight
from flipless.merge.sources import open_source
from flipless.merge.streaming import stream_merge

PathLike = str | os.PathLike[str]


def interpolate_files(
    old: PathLike,
    news: Sequence[PathLike],
    out_dir: PathLike,
    *,
    policy: MergePolicy,
    fisher: PathLike | None = None,
    soup_weights: Sequence[float] | None = None,
    max_shard_bytes: int = 2**30,
) -> Path:
    """θ(α) of the checkpoints, written to ``out_dir`` as safetensors (sharded when large).

    Each output file keeps the old checkpoint's metadata (a flipless model file stays
    loadable with :func:`~flipless.models.load_model`) and records the policy under
    ``flipless.merge``.
    """
    old_source = open_source(old)
    new_sources = [open_source(path) for path in news]
    fisher_source = open_source(fisher) if fisher is not None else None
    check_sources(old_source, new_sources, fisher_source)
    names = list(old_source.keys())
    old_weights = policy.old_weights(names)

    def merge(name: str, old_tensor: Any, new_tensors: list[Any]) -> Any:
        information = None
        if fisher_source is not None and name in fisher_source:
            information = fisher_source.get(name)
        return merge_tensors(
            name,
            old_tensor,
            new_tensors,
            policy,
            old_weight=old_weights[name],
            fisher=information,
            weights=soup_weights,
        )

    record = {
        "policy": policy.describe(),
        "news": [str(path) for path in news],
        "fisher": str(fisher) if fisher is not None else None,
        "soup_weights": list(soup_weights) if soup_weights is not None else None,
    }
    try:
        return stream_merge(
            old,
            list(news),
            out_dir,
            merge,
            max_shard_bytes=max_shard_bytes,
            metadata={"flipless.merge": json.dumps(record, default=str)},
        )
    finally:
        for source in (old_source, *new_sources, fisher_source):
            if source is not None:
                source.close()


def select_for_files(
    old: PathLike,
    news: Sequence[PathLike],
    dev: Any,
    *,
    rule: str = "max-old-weight-within:0.005",
    grid: Sequence[float] = DEFAULT_GRID,
    fisher: PathLike | None = None,
    soup_weights: Sequence[float] | None = None,
    policy: MergePolicy | None = None,
) -> WeightSelection:
    """Evaluate θ(α) for every α of ``grid`` on ``dev`` and choose by ``rule``.

    ``old`` and ``news`` are flipless model files (:func:`~flipless.models.save_model`);
    every candidate is rebuilt from the old file's architecture and loaded with θ(α) of
    ``policy.with_old_weight(α)`` (the same rules and new-class rows as the merge written
    afterwards; plain interpolation when None).
    """
    from flipless.models.files import load_model

    old_model = load_model(old)

    base = policy if policy is not None else MergePolicy(old_weight=0.0)

    def make_candidate(old_weight: float) -> Any:
        return interpolate(
            old,
            list(news),
            policy=base.with_old_weight(old_weight),
            fisher=fisher,
            weights=soup_weights,
            model=load_model(old),
        )

    return select_old_weight(make_candidate, dev, old_model=old_model, grid=grid, rule=rule)


def write_selection(selection: WeightSelection, path: PathLike) -> None:
    """The selection (rule, chosen α, reason, the whole dev curve) as JSON; NaN as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    Path(path).write_text(json.dumps(clean(selection.to_dict()), indent=1) + "\n")
