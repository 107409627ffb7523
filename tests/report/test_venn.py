"""The area-proportional Venn layout, checked against the closed-form lens area in float64."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from flipless.errors import InputError
from flipless.report.venn import LARGER_RADIUS, circle_distance, lens_area, venn_layout


def reference_lens(r1: float, r2: float, d: float) -> float:
    """The textbook lens area (the form with the square root of the four-factor product)."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    return (
        r1 * r1 * math.acos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
        + r2 * r2 * math.acos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
        - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))
    )


@pytest.mark.parametrize(
    ("r1", "r2", "d"),
    [(1.0, 1.0, 1.0), (3.0, 1.0, 2.5), (1.0, 3.0, 3.9), (2.0, 5.0, 3.1), (5.0, 5.0, 0.2)],
)
def test_lens_area_equals_the_closed_form(r1, r2, d):
    assert lens_area(r1, r2, d) == pytest.approx(reference_lens(r1, r2, d), rel=1e-12)


def test_lens_area_of_two_unit_circles_a_radius_apart_by_hand():
    # Two unit circles at distance 1: 2π/3 − √3/2 (each segment has a 120° central angle).
    assert lens_area(1.0, 1.0, 1.0) == pytest.approx(2 * math.pi / 3 - math.sqrt(3) / 2, 1e-14)


@pytest.mark.parametrize(
    ("r1", "r2", "share"),
    [(1.0, 1.0, 0.5), (3.0, 1.0, 0.01), (1.0, 3.0, 0.99), (10.0, 0.3, 0.5), (2.0, 2.5, 0.25)],
)
def test_the_solved_distance_gives_the_wanted_overlap(r1, r2, share):
    overlap = share * math.pi * min(r1, r2) ** 2
    distance = circle_distance(r1, r2, overlap)
    assert abs(r1 - r2) < distance < r1 + r2
    assert reference_lens(r1, r2, distance) == pytest.approx(overlap, rel=1e-10)


def test_no_overlap_touches_and_full_overlap_nests():
    assert circle_distance(2.0, 1.0, 0.0) == 3.0
    assert circle_distance(2.0, 1.0, math.pi) == 1.0  # the small circle inside, tangent


def test_impossible_overlaps_are_rejected():
    with pytest.raises(InputError, match="between 0 and the smaller circle's area"):
        circle_distance(2.0, 1.0, 4.0)
    with pytest.raises(InputError, match="common ≤ both"):
        venn_layout(5, 3, 4)
    with pytest.raises(InputError, match="non-negative"):
        venn_layout(-1, 3, 0)


def _area(circle: dict) -> float:
    return math.pi * circle["r"] ** 2


@pytest.mark.parametrize(("old", "new", "common"), [(36, 23, 18), (273, 206, 38), (5, 400, 3)])
def test_layout_areas_are_proportional_to_the_counts(old, new, common):
    layout = venn_layout(old, new, common).to_dict()
    circle_old, circle_new = layout["old"], layout["new"]
    assert max(circle_old["r"], circle_new["r"]) == pytest.approx(LARGER_RADIUS)
    unit = _area(circle_old) / old  # area per error
    assert _area(circle_new) / new == pytest.approx(unit, rel=1e-12)
    distance = circle_new["cx"] - circle_old["cx"]
    lens = reference_lens(circle_old["r"], circle_new["r"], distance)
    assert lens / common == pytest.approx(unit, rel=1e-9)
    assert all(layout["paths"][region] for region in ("progress", "common", "regress"))
    # Every circle lies inside the drawing.
    for circle in (circle_old, circle_new):
        assert circle["cx"] - circle["r"] >= 0 and circle["cx"] + circle["r"] <= layout["width"]


def _inside(circle: dict, x: float, y: float) -> bool:
    return (x - circle["cx"]) ** 2 + (y - circle["cy"]) ** 2 < circle["r"] ** 2


@pytest.mark.parametrize(("old", "new", "common"), [(36, 23, 18), (10, 10, 0), (40, 10, 10)])
def test_label_points_lie_in_their_regions(old, new, common):
    layout = venn_layout(old, new, common).to_dict()
    expected = {"progress": (True, False), "common": (True, True), "regress": (False, True)}
    for region, (in_old, in_new) in expected.items():
        if not layout["paths"][region]:
            continue
        x, y = layout["labels"][region]
        assert (_inside(layout["old"], x, y), _inside(layout["new"], x, y)) == (in_old, in_new)


def test_degenerate_layouts():
    disjoint = venn_layout(10, 10, 0).to_dict()
    assert disjoint["paths"]["common"] == ""
    gap = disjoint["new"]["cx"] - disjoint["old"]["cx"] - 2 * disjoint["old"]["r"]
    assert gap > 0
    nested = venn_layout(40, 10, 10).to_dict()  # every new error was an old error
    assert nested["paths"]["regress"] == ""
    assert nested["paths"]["progress"].count("M") == 2  # a ring: outer and inner circle
    same = venn_layout(7, 7, 7).to_dict()
    assert same["paths"]["progress"] == same["paths"]["regress"] == ""
    only_old = venn_layout(7, 0, 0).to_dict()
    assert only_old["new"]["r"] == 0 and only_old["paths"]["regress"] == ""
    nothing = venn_layout(0, 0, 0).to_dict()
    assert not any(nothing["paths"].values())


def test_paths_hold_numbers_and_commands_only():
    for path in venn_layout(36, 23, 18).paths.values():
        assert re.fullmatch(r"[MAZ0-9 .\-]+", path)
        numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", path)]
        assert np.isfinite(numbers).all()
