"""The points of a sweep: method × strength × seed, each with a stable id and its run config.

A point's id is ``method/strength_name=strength/seed=N`` (``cross-entropy/seed=N`` for the
plain update), e.g. ``fd-kl/weight=1.0/seed=0``; its files go to ``points/<safe id>/`` in the
sweep folder, the safe id being the id with ``/`` replaced by ``__``. An interpolation point
depends on the cross-entropy point of its seed, whose model it interpolates with the old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipless.sweep.config import CROSS_ENTROPY, SweepConfig
from flipless.train.config import LossConfig, OldConfig, RunConfig, TrackingConfig

POINTS_FOLDER = "points"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def point_id(method: str, strength_name: str, strength: float | None, seed: int) -> str:
    """``fd-kl/weight=1.0/seed=0``; ``cross-entropy/seed=0`` when there is no strength."""
    if strength is None:
        return f"{method}/seed={seed}"
    return f"{method}/{strength_name}={float(strength)!r}/seed={seed}"


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid."""

    method: str
    kind: str
    strength_name: str
    strength: float | None
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def point_id(self) -> str:
        return point_id(self.method, self.strength_name, self.strength, self.seed)

    @property
    def safe_id(self) -> str:
        """The id as a folder name: ``fd-kl__weight=1.0__seed=0``."""
        return _UNSAFE.sub("-", self.point_id.replace("/", "__"))

    @property
    def depends_on(self) -> str | None:
        """The id of the point whose model this one needs (the seed's cross-entropy point)."""
        if self.kind != "interpolation":
            return None
        return point_id(CROSS_ENTROPY, "weight", None, self.seed)

    def fingerprint(self, base: str) -> str:
        """The SHA-256 of the base fingerprint and everything that sets this point apart."""
        settings = {
            "base": base,
            "method": self.method,
            "strength_name": self.strength_name,
            "strength": self.strength,
            "seed": self.seed,
            "options": dict(self.options),
        }
        text = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def sweep_points(config: SweepConfig) -> list[SweepPoint]:
    """Every point, cross-entropy first (the others need it), then method by method and
    strength by strength, seeds innermost."""
    points = []
    for grid in sorted(config.methods, key=lambda grid: grid.method != CROSS_ENTROPY):
        strengths: tuple[float | None, ...] = grid.strengths or (None,)
        for strength in strengths:
            for seed in config.seeds:
                points.append(
                    SweepPoint(
                        grid.method, grid.kind, grid.strength_name, strength, seed, grid.options
                    )
                )
    return points


def point_folder(sweep_folder: Path, point: SweepPoint) -> Path:
    return sweep_folder / POINTS_FOLDER / point.safe_id


def point_config(
    base: RunConfig, point: SweepPoint, sweep_folder: Path, old_checkpoint: Path
) -> RunConfig:
    """The run config of a point: the base with the point's loss, seed, folder and old model.

    ``seed`` stays the base's (the data split), ``train.seed`` is the point's seed, the old
    model is the sweep's checkpoint, progress is off and tracking is the sweep's (a child run,
    logged by the parent process). An interpolation point's config is that of the
    cross-entropy model it interpolates.
    """
    preset = point.method if point.kind == "loss" else CROSS_ENTROPY
    overrides: dict[str, Any] = {}
    if preset != CROSS_ENTROPY:
        overrides = {**point.options, point.strength_name: point.strength}
    return dataclasses.replace(
        base,
        output_dir=str(point_folder(sweep_folder, point)),
        old=OldConfig(checkpoint=str(old_checkpoint)),
        loss=LossConfig(
            preset=preset,
            teacher=base.loss.teacher,
            ce_weight=base.loss.ce_weight,
            overrides=overrides,
        ),
        train=dataclasses.replace(base.train, seed=point.seed, progress="none"),
        tracking=TrackingConfig(),
    )
