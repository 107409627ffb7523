"""The area-proportional Venn diagram of the old and the new model's errors.

Two circles: the old model's errors (area ∝ #old wrong) and the new model's (area ∝ #new
wrong), placed so that their overlap (the lens) has area ∝ #both wrong. The three regions are

* ``progress``: old errors only, the positive flips (the update fixed them);
* ``common``: wrong both times, whether with the same or a different wrong answer;
* ``regress``: new errors only, the negative flips (the update broke them).

A circle of count c has radius r = √(c / π) · s for one scale s, so areas are exact. The lens of
circles r₁, r₂ at centre distance d has area (two circular segments)

    L(d) = ½ r₁² (θ₁ − sin θ₁) + ½ r₂² (θ₂ − sin θ₂),
    θ₁ = 2 acos((d² + r₁² − r₂²) / (2 d r₁)),  θ₂ = 2 acos((d² + r₂² − r₁²) / (2 d r₂)),

which falls strictly from π min(r₁, r₂)² at d = |r₁ − r₂| to 0 at d = r₁ + r₂; the distance
whose lens has the wanted area is found by Brent's method. The layout (radii, centres, region
outlines as SVG paths, label points) is computed here, so the browser only draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

from flipless.errors import InputError

#: Radius of the larger circle in the diagram's own units (its viewBox).
LARGER_RADIUS = 90.0
#: Space around the circles and, when they do not overlap, between them.
MARGIN = 12.0


def lens_area(old_radius: float, new_radius: float, distance: float) -> float:
    """Area of the intersection of two circles (see the module docstring)."""
    small, large = sorted((old_radius, new_radius))
    if distance >= old_radius + new_radius:
        return 0.0
    if distance <= large - small:
        return math.pi * small * small

    def segment(radius: float, other: float) -> float:
        cosine = (distance**2 + radius**2 - other**2) / (2.0 * distance * radius)
        theta = 2.0 * math.acos(min(1.0, max(-1.0, cosine)))
        return 0.5 * radius * radius * (theta - math.sin(theta))

    return segment(old_radius, new_radius) + segment(new_radius, old_radius)


def circle_distance(old_radius: float, new_radius: float, overlap: float) -> float:
    """The centre distance d at which the two circles' lens has area ``overlap``."""
    if old_radius < 0 or new_radius < 0:
        raise InputError(f"Radii {old_radius}, {new_radius}; expected non-negative radii.")
    small, large = sorted((old_radius, new_radius))
    full = math.pi * small * small
    if not 0.0 <= overlap <= full * (1.0 + 1e-12):
        raise InputError(
            f"Overlap area {overlap} for radii {old_radius}, {new_radius}; expected a value "
            f"between 0 and the smaller circle's area {full}."
        )
    if overlap <= 0.0:
        return old_radius + new_radius
    if overlap >= full:
        return large - small
    return float(
        brentq(
            lambda d: lens_area(old_radius, new_radius, d) - overlap,
            large - small,
            old_radius + new_radius,
            xtol=1e-14 * (old_radius + new_radius),
            rtol=4 * 2.0**-52,
            maxiter=200,
        )
    )


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class VennLayout:
    """Circles, region outlines (SVG path data, empty when a region is empty) and label points."""

    width: float
    height: float
    old: Circle
    new: Circle
    paths: dict[str, str]
    labels: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "old": vars(self.old),
            "new": vars(self.new),
            "paths": dict(self.paths),
            "labels": {name: list(point) for name, point in self.labels.items()},
        }


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _circle_path(circle: Circle) -> str:
    """A full circle as two half-circle arcs (SVG paths have no circle command)."""
    if circle.r <= 0:
        return ""
    left = f"{_number(circle.cx - circle.r)} {_number(circle.cy)}"
    right = f"{_number(circle.cx + circle.r)} {_number(circle.cy)}"
    radius = _number(circle.r)
    return f"M {left} A {radius} {radius} 0 1 0 {right} A {radius} {radius} 0 1 0 {left} Z"


def venn_layout(old_errors: int, new_errors: int, common: int) -> VennLayout:
    """Lay out the diagram for #old wrong, #new wrong and #both wrong (``common``).

    The old circle is on the left, the new one on the right; the larger has radius
    :data:`LARGER_RADIUS`. Raises InputError when the counts are impossible.
    """
    if min(old_errors, new_errors, common) < 0 or common > min(old_errors, new_errors):
        raise InputError(
            f"Error counts old {old_errors}, new {new_errors}, common {common}; expected "
            "non-negative counts with common ≤ both."
        )
    largest = max(old_errors, new_errors)
    scale = LARGER_RADIUS / math.sqrt(largest / math.pi) if largest else 0.0
    r_old = math.sqrt(old_errors / math.pi) * scale
    r_new = math.sqrt(new_errors / math.pi) * scale
    overlap = common * scale * scale  # area of `common` counts at the same scale
    if old_errors and new_errors:
        distance = circle_distance(r_old, r_new, min(overlap, math.pi * min(r_old, r_new) ** 2))
        if common == 0:
            distance += MARGIN  # disjoint: leave a visible gap
    else:
        distance = r_old + r_new + (MARGIN if old_errors or new_errors else 0.0)
    left = MARGIN + r_old
    # The new circle may reach further left than the old one when it contains it.
    left += max(0.0, (r_new - distance) - r_old)
    old = Circle(left, MARGIN + LARGER_RADIUS, r_old)
    new = Circle(left + distance, MARGIN + LARGER_RADIUS, r_new)
    width = max(old.cx + r_old, new.cx + r_new) + MARGIN
    height = 2 * (MARGIN + LARGER_RADIUS)
    paths, labels = _regions(old, new, common, old_errors, new_errors)
    return VennLayout(width, height, old, new, paths, labels)


def _regions(
    old: Circle, new: Circle, common: int, old_errors: int, new_errors: int
) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """SVG outlines of progress (old only), common (both) and regress (new only)."""
    cy = old.cy
    d = new.cx - old.cx
    paths = {"progress": "", "common": "", "regress": ""}
    labels = {
        "progress": (old.cx - 0.5 * old.r, cy),
        "common": (0.5 * (old.cx + old.r + new.cx - new.r), cy),
        "regress": (new.cx + 0.5 * new.r, cy),
    }
    if common == 0:  # disjoint (or one side has no errors)
        paths["progress"] = _circle_path(old)
        paths["regress"] = _circle_path(new)
        return paths, labels
    if common in (old_errors, new_errors):  # one circle inside the other
        inner, outer, outer_name = (
            (old, new, "regress") if common == old_errors else (new, old, "progress")
        )
        paths["common"] = _circle_path(inner)
        if common != max(old_errors, new_errors):
            paths[outer_name] = f"{_circle_path(outer)} {_circle_path(inner)}"  # even-odd ring
            far = outer.cx + outer.r if outer_name == "regress" else outer.cx - outer.r
            near = inner.cx + inner.r if outer_name == "regress" else inner.cx - inner.r
            labels[outer_name] = (0.5 * (far + near), cy)
        labels["common"] = (inner.cx, cy)
        return paths, labels
    # Proper intersection: P (top) and Q (bottom), a along the centre line from the old centre.
    a = (d * d + old.r**2 - new.r**2) / (2.0 * d)
    h = math.sqrt(max(old.r**2 - a * a, 0.0))
    px, top, bottom = old.cx + a, cy - h, cy + h
    p, q = f"{_number(px)} {_number(top)}", f"{_number(px)} {_number(bottom)}"
    ro, rn = _number(old.r), _number(new.r)
    # Arc of each circle lying inside the other: large when its centre angle exceeds π.
    new_inside_large = int(d * d + new.r**2 - old.r**2 < 0)
    old_inside_large = int(d * d + old.r**2 - new.r**2 < 0)
    # y points down in SVG: sweep 1 is clockwise on screen.
    paths["common"] = (
        f"M {p} A {rn} {rn} 0 {new_inside_large} 0 {q} A {ro} {ro} 0 {old_inside_large} 0 {p} Z"
    )
    paths["regress"] = (
        f"M {p} A {rn} {rn} 0 {1 - new_inside_large} 1 {q} A {ro} {ro} 0 {old_inside_large} 0 {p} Z"
    )
    paths["progress"] = (
        f"M {p} A {ro} {ro} 0 {1 - old_inside_large} 0 {q} A {rn} {rn} 0 {new_inside_large} 1 {p} Z"
    )
    lens_left, lens_right = new.cx - new.r, old.cx + old.r
    labels["common"] = (0.5 * (lens_left + lens_right), cy)
    labels["progress"] = (0.5 * (old.cx - old.r + min(lens_left, px)), cy)
    labels["regress"] = (0.5 * (new.cx + new.r + max(lens_right, px)), cy)
    return paths, labels
