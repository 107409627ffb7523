"""Interpolation of checkpoint files, streamed, and the old-weight search on a dev split.

What ``flipless interpolate`` runs: :func:`interpolate_files` merges an old checkpoint with
one or more new ones (a soup) tensor by tensor through
:func:`~flipless.merge.streaming.stream_merge`, so memory stays near the largest tensor;
:func:`select_for_files` evaluates a grid of old-weights on a dev split with
:func:`~flipless.merge.selection.select_old_weight` (the models must be flipless model files,
which record how to rebuild their architecture).

Every path may be a URL (``s3://…``; :mod:`flipless.remote`): remote checkpoints are
downloaded to a temporary folder first (a sharded ``*.index.json`` with its folder), and a
remote output folder, which must not exist yet, is written locally and then uploaded file by
file, the shard index last.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flipless import remote
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
) -> str | Path:
    """θ(α) of the checkpoints, written to ``out_dir`` as safetensors (sharded when large).

    Each output file keeps the old checkpoint's metadata (a flipless model file stays
    loadable with :func:`~flipless.models.load_model`) and records the policy under
    ``flipless.merge``. Paths may be URLs (see the module docstring); returns ``out_dir``.
    """
    record = {
        "policy": policy.describe(),
        "news": [str(path) for path in news],
        "fisher": str(fisher) if fisher is not None else None,
        "soup_weights": list(soup_weights) if soup_weights is not None else None,
    }
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(remote.atomic_local_folder(out_dir))
        written = _interpolate_local(
            local_checkpoint(old, stack),
            [local_checkpoint(path, stack) for path in news],
            target,
            policy=policy,
            fisher=None if fisher is None else local_checkpoint(fisher, stack),
            soup_weights=soup_weights,
            max_shard_bytes=max_shard_bytes,
            record=record,
        )
    return remote.as_path(out_dir) if remote.is_remote(out_dir) else written


def local_checkpoint(path: PathLike, stack: contextlib.ExitStack) -> PathLike:
    """``path`` when local; else a downloaded copy, kept until ``stack`` closes (a sharded
    ``*.index.json`` comes with the files of its folder)."""
    if not remote.is_remote(path):
        return path
    name = remote.name_of(path)
    if name.endswith(".index.json"):
        return stack.enter_context(remote.local_tree(remote.parent_of(path))) / name
    return stack.enter_context(remote.local_tree(path))


def _interpolate_local(
    old: PathLike,
    news: Sequence[PathLike],
    out_dir: PathLike,
    *,
    policy: MergePolicy,
    fisher: PathLike | None,
    soup_weights: Sequence[float] | None,
    max_shard_bytes: int,
    record: dict[str, Any],
) -> Path:
    """:func:`interpolate_files` on local files; ``record`` goes into each file's metadata."""
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
    afterwards; plain interpolation when None). Remote files are downloaded once.
    """
    with contextlib.ExitStack() as stack:
        return _select_local(
            local_checkpoint(old, stack),
            [local_checkpoint(path, stack) for path in news],
            dev,
            rule=rule,
            grid=grid,
            fisher=None if fisher is None else local_checkpoint(fisher, stack),
            soup_weights=soup_weights,
            policy=policy,
        )


def _select_local(
    old: PathLike,
    news: Sequence[PathLike],
    dev: Any,
    *,
    rule: str,
    grid: Sequence[float],
    fisher: PathLike | None,
    soup_weights: Sequence[float] | None,
    policy: MergePolicy | None,
) -> WeightSelection:
    """:func:`select_for_files` on local files."""
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

    remote.write_text(path, json.dumps(clean(selection.to_dict()), indent=1) + "\n")
