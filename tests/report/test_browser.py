"""The report in a real headless Chromium: the numbers shown, clicks that filter the table,
escaping, a screenshot, the sweep's plots, and the widget's module.

Every page blocks and records network requests (see conftest.py); each test ends by checking
that none was attempted and that no script error, console error or dialog occurred.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import flipless
from flipless.report import write_report
from flipless.report.venn import venn_layout
from flipless.report.widget import widget_module

pytestmark = pytest.mark.browser

EVIL = "<script>alert(1)</script>"
NAMES = ["cat", EVIL, "owl", "emu"]
SIZE = 300


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, SIZE)

    def logits(accuracy: float) -> np.ndarray:
        scores = rng.normal(size=(SIZE, 4))
        right = rng.random(SIZE) < accuracy
        scores[np.arange(SIZE), labels] += np.where(right, 5.0, -5.0)
        return scores

    region = np.where(rng.random(SIZE) < 0.4, "north", "south")
    comparison = flipless.compare(
        logits(0.75),
        logits(0.8),
        labels,
        ids=[f"s{i:03d}" for i in range(SIZE)],
        class_names=NAMES,
        slices={"region": region},
    )
    return {"comparison": comparison, "region": region}


@pytest.fixture(scope="module")
def report(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    texts = [f"text {i} <img src=x onerror=alert(2)>" for i in range(SIZE)]
    return write_report(
        data["comparison"],
        path,
        inputs=np.random.default_rng(0).random((SIZE, 8, 8)),
        texts=texts,
        metadata={"region": list(data["region"]), "note": [EVIL] * SIZE},
        title=f"update {EVIL}",
    )


def open_report(page, path):
    page.goto(path.as_uri())
    page.wait_for_selector(".fl-count")
    return page


def assert_clean(page):
    assert page.log.blocked == [], "the report tried to reach the network"
    assert page.log.errors == []
    assert page.log.dialogs == []


def count(page) -> int:
    return int(page.get_attribute(".fl-count", "data-count"))


def first_page_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        ".fl-table tbody tr", "rows => rows.map(r => r.cells[1].textContent)"
    )


def test_the_numbers_shown_equal_the_comparison(page, data, report):
    comparison = data["comparison"]
    open_report(page, report)
    shown = {
        row.get_attribute("data-key"): (
            row.query_selector(".fl-value").text_content(),
            row.query_selector(".fl-counts").text_content(),
        )
        for row in page.query_selector_all(".fl-summary-table tbody tr")
    }
    for key in ("accuracy_old", "accuracy_new", "negative_flip_rate", "positive_flip_rate"):
        rate = comparison.rate(key)
        value, counts = shown[key]
        assert float(value.removesuffix(" %")) == pytest.approx(100 * rate.value, abs=0.005)
        assert counts == f"{rate.numerator:,} / {rate.denominator:,}"
    for key in ("backward_trust_compatibility", "backward_error_compatibility"):
        assert float(shown[key][0].removesuffix(" %")) == pytest.approx(
            100 * getattr(comparison, key), abs=0.005
        )
    assert float(shown["relative_negative_flip_rate"][0]) == pytest.approx(
        comparison.relative_negative_flip_rate, abs=0.0005
    )
    assert float(shown["mcnemar_p"][0]) == pytest.approx(
        comparison.significance.mcnemar.p_value, rel=1e-2
    )
    low = comparison.significance.intervals["negative_flip_rate"].low
    interval = page.text_content('[data-key="negative_flip_rate"] .fl-interval')
    assert interval.startswith(f"[{100 * low:.2f}, ")
    labels = {
        region: int(page.text_content(f'[data-region-label="{region}"]'))
        for region in ("progress", "common", "regress")
    }
    counts = comparison.counts
    assert labels == {
        "progress": counts.positive_flips,
        "common": counts.both_wrong,
        "regress": counts.negative_flips,
    }
    flips_per_class = comparison.per_class()["negative_flips"].tolist()
    values = page.eval_on_selector_all(
        ".fl-groups:first-of-type .fl-bar-value", "bars => bars.map(b => b.textContent)"
    )
    assert [int(v.split(" ")[0]) for v in values[:4]] == flips_per_class
    page.select_option(".fl-groups .fl-view >> nth=0", "accuracy")  # the alternative view
    values = page.eval_on_selector_all(
        ".fl-groups:first-of-type .fl-bar-value", "bars => bars.map(b => b.textContent)"
    )
    per_class = comparison.per_class()
    assert values[:4] == [
        f"{100 * row.accuracy_old:.1f} % → {100 * row.accuracy_new:.1f} %"
        for row in per_class.itertuples()
    ]
    assert count(page) == counts.total - counts.both_correct  # default rows: flips and errors
    assert_clean(page)


def test_clicking_a_venn_region_and_a_class_bar_filters_the_table(page, data, report):
    comparison = data["comparison"]
    kept = comparison.instances
    open_report(page, report)
    box = page.locator('[data-region-label="regress"]').bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert count(page) == comparison.negative_flips
    assert first_page_ids(page) == comparison.negative_flip_ids()[:50].tolist()
    assert page.get_attribute('path[data-region="regress"]', "aria-pressed") == "true"

    page.locator(".fl-bar-row", has_text="owl").first.click()  # true class 2
    both = kept.negative_flip & (kept.labels == 2)
    assert count(page) == both.sum() > 0
    assert first_page_ids(page) == kept.ids[both].tolist()
    assert page.locator(".fl-chip").count() == 2
    page.select_option(".fl-groups .fl-view >> nth=0", "accuracy")  # the filter stays marked
    owl = page.locator(".fl-bar-row", has_text="owl").first
    assert owl.get_attribute("aria-pressed") == "true" and count(page) == both.sum()

    page.locator(".fl-chip", has_text="regress").click()  # remove the Venn filter
    errors = (kept.labels == 2) & ~(kept.old_correct & kept.new_correct)
    assert count(page) == errors.sum()
    page.check(".fl-all-rows")  # every row of the class
    assert count(page) == (kept.labels == 2).sum()
    page.locator(".fl-bar-row", has_text="owl").first.click()  # clicking again removes it
    assert count(page) == SIZE and page.locator(".fl-chip").count() == 0
    assert_clean(page)


def test_heatmap_cells_slices_search_sorting_and_pages(page, data, report):
    comparison = data["comparison"]
    kept = comparison.instances
    open_report(page, report)
    matrix = comparison.flip_matrix
    old, new = np.unravel_index(np.argmax(matrix), matrix.shape)
    page.click(f'td[data-old="{old}"][data-new="{new}"]')
    cell = kept.negative_flip & (kept.old_pred == old) & (kept.new_pred == new)
    assert count(page) == matrix[old, new] == cell.sum()
    page.locator(".fl-bar-row", has_text="south").click()  # the slice filter combines (AND)
    south = data["region"] == "south"
    assert count(page) == (cell & south).sum()
    page.locator(".fl-chip", has_text="negative flip").click()
    page.locator(".fl-chip", has_text="region = south").click()

    page.fill(".fl-search", "TEXT 12")  # case-insensitive substring: text 12, 120–129
    wrong = ~(kept.old_correct & kept.new_correct)
    hits = np.array([f"text {i} ".startswith("text 12") for i in range(SIZE)]) & wrong
    assert count(page) == hits.sum()
    page.fill(".fl-search", "")

    page.click('.fl-sort[data-column="new_confidence"]')
    page.click('.fl-sort[data-column="new_confidence"]')  # descending
    confidences = page.eval_on_selector_all(
        ".fl-table tbody tr", "rows => rows.map(r => Number(r.cells[7].textContent))"
    )
    expected = np.sort(np.round(kept.new_confidence[wrong].astype(np.float64), 4))[::-1][:50]
    assert confidences == pytest.approx(expected.tolist(), abs=5e-4)

    page.click('.fl-sort[data-column="id"]')
    page.click('.fl-sort[data-column="id"]')  # descending
    assert first_page_ids(page)[:3] == kept.ids[wrong][::-1][:3].tolist()
    page.click('.fl-sort[data-column="label"]')  # by name, code-unit order: "<" before "c"
    labels = page.eval_on_selector_all(
        ".fl-table tbody tr", "rows => rows.map(r => r.cells[3].textContent)"
    )
    assert labels == sorted(labels) and labels[0] == "<script>alert(1)</script>"

    total = wrong.sum()
    page.click(".fl-last")
    last = page.text_content(".fl-page")
    assert last.endswith(f"of {-(-total // 50)}") and f"–{total}," in last
    assert page.locator(".fl-table tbody tr").count() == total - 50 * (-(-total // 50) - 1)
    assert_clean(page)


def test_user_strings_are_shown_as_text_and_never_run(page, report):
    open_report(page, report)
    label = page.locator(".fl-bar-label", has_text="alert").first
    assert label.text_content() == EVIL
    assert page.locator("h1").text_content() == f"update {EVIL}"
    assert page.title() == f"update {EVIL}"
    assert EVIL in page.locator(".fl-table tbody").text_content()  # the metadata column
    assert page.locator("img:not(.fl-thumb)").count() == 0  # the text's <img> stayed text
    assert page.locator("script").count() == 3  # the data, one comparison and the code
    page.locator(".fl-bar-row", has_text="alert").first.click()
    page.fill(".fl-search", "onerror")
    assert page.evaluate("typeof window.alert") == "function"
    assert_clean(page)  # and no dialog opened


def test_a_screenshot_is_not_blank(page, report):
    open_report(page, report)
    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3).astype(np.int64)
    assert image.size == (1280, 900)
    colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
    assert len(colours) > 50  # text, bars, circles
    assert pixels.std() > 20
    assert page.locator(".fl-thumb").count() == 50  # every row of the first page is an error
    assert page.evaluate(
        "Array.from(document.querySelectorAll('.fl-thumb')).every(i => i.naturalWidth === 8)"
    )
    assert_clean(page)


@pytest.mark.parametrize(("old", "new", "common"), [(36, 23, 18), (5, 400, 3), (40, 10, 10)])
def test_venn_regions_cover_exactly_their_part_of_the_circles(page, old, new, common):
    """Chromium's own fill test, on a grid, against membership of the two circles."""
    layout = venn_layout(old, new, common).to_dict()
    paths = "".join(
        f'<path id="{region}" d="{path}" fill-rule="evenodd"/>'
        for region, path in layout["paths"].items()
        if path
    )
    page.set_content(f'<svg viewBox="0 0 {layout["width"]} {layout["height"]}">{paths}</svg>')
    checked, wrong = page.evaluate(
        """([width, height, circles]) => {
            const svg = document.querySelector("svg");
            const fill = (id, point) => {
                const path = document.getElementById(id);
                return path !== null && path.isPointInFill(point);
            };
            // Distance to the circle's edge, in units: points within 1.5 of an edge are skipped.
            const depth = (c, x, y) => c.r - Math.hypot(x - c.cx, y - c.cy);
            let checked = 0;
            const wrong = [];
            for (let x = 0.5; x < width; x += 2) for (let y = 0.5; y < height; y += 2) {
                const [old, neu] = circles.map((c) => depth(c, x, y));
                if (Math.abs(old) < 1.5 || Math.abs(neu) < 1.5) continue;
                const point = svg.createSVGPoint(); point.x = x; point.y = y;
                const found = ["progress", "common", "regress"].map((id) => fill(id, point));
                const expected = [old > 0 && neu < 0, old > 0 && neu > 0, neu > 0 && old < 0];
                checked += 1;
                if (found.some((f, i) => f !== expected[i])) wrong.push([x, y, found, expected]);
            }
            return [checked, wrong.slice(0, 5)];
        }""",
        [layout["width"], layout["height"], [layout["old"], layout["new"]]],
    )
    assert wrong == [] and checked > 5000


RUNS = [("cross-entropy", None, 0), ("fd-kl", 1.0, 0), ("fd-kl", 2.0, 1), ("ldi", 0.5, 0)]


def sweep_records(tmp_path, runs=RUNS):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 120)
    old = np.where(rng.random(120) < 0.7, labels, (labels + 1) % 3)
    records = []
    for index, (method, strength, seed) in enumerate(runs):
        new = np.where(rng.random(120) < 0.75 + 0.03 * index, labels, (labels + 2) % 3)
        comparison = flipless.compare(old, new, labels, class_names=["a", "b", "c"])
        comparison.to_json(str(tmp_path / f"c{index}.json"))
        test = {
            "accuracy": comparison.accuracy_new,
            "old_accuracy": comparison.accuracy_old,
            "negative_flip_rate": comparison.negative_flip_rate,
            "positive_flip_rate": comparison.positive_flip_rate,
            "relative_negative_flip_rate": comparison.relative_negative_flip_rate,
            "backward_trust_compatibility": comparison.backward_trust_compatibility,
            "backward_error_compatibility": comparison.backward_error_compatibility,
            "size": 120,
        }
        records.append(
            {
                "schema": "flipless.sweep-record/1",
                "point_id": f"{method}/weight={strength}/seed={seed}",
                "method": method,
                "kind": "loss",
                "strength_name": "weight",
                "strength": strength,
                "seed": seed,
                "metrics": {"test": test, "dev": test},
                "comparison_path": f"c{index}.json",
                "comparison": comparison,
            }
        )
    return records


def test_sweep_plots_hover_and_select_a_run(page, tmp_path):
    records = sweep_records(tmp_path)
    comparisons = [r.pop("comparison") for r in records]
    path = write_report(records, tmp_path / "sweep.html", base_dir=tmp_path)
    open_report(page, path)
    assert page.locator("svg.fl-scatter").count() == 3
    assert page.locator('svg.fl-scatter[aria-label="accuracy against NFR"] .fl-point').count() == 4
    assert page.locator(".fl-reference").count() == 3
    assert page.text_content(".fl-comparison h2") == "Run cross-entropy seed=0"

    dot = page.locator('svg.fl-scatter[aria-label="accuracy against BTC"] [data-point="2"]')
    dot.hover()
    tooltip = page.text_content(".fl-tooltip")
    assert "method: fd-kl" in tooltip and "strength: weight = 2" in tooltip
    assert "seed: 1" in tooltip
    dot.click()
    assert page.text_content(".fl-comparison h2") == "Run fd-kl weight=2 seed=1"
    shown = page.text_content('[data-key="negative_flip_rate"] .fl-counts')
    assert shown == f"{comparisons[2].negative_flips} / 120"
    assert count(page) == 120 - comparisons[2].counts.both_correct
    front = page.eval_on_selector_all(
        'svg.fl-scatter[aria-label="accuracy against NFR"] .fl-front',
        "dots => dots.map(d => Number(d.getAttribute('data-point')))",
    )
    main = json.loads(page.text_content("#flipless-payload"))
    assert sorted(front) == main["sweep"]["metrics"]["test"]["pareto"]["negative_flip_rate"]
    page.select_option(".fl-sweep select", "dev")
    assert page.locator(".fl-points tbody tr.fl-selected").get_attribute("data-point") == "2"
    assert_clean(page)


# Shuffled, as a sweep with workers appends them; the table shows them by method (in the
# order methods first appear, the legend's), then strength (none first), then seed.
SHUFFLED_RUNS = [
    ("fd-kl", 2.0, 0),
    ("cross-entropy", None, 0),
    ("fd-kl", 1.0, 1),
    ("ldi", 0.5, 0),
    ("fd-kl", 1.0, 0),
    ("bcwi", 0.3, 0),
    ("cross-entropy", None, 1),
]


def table_order(page) -> list[int]:
    return page.eval_on_selector_all(
        ".fl-points tbody tr", "rows => rows.map(r => Number(r.getAttribute('data-point')))"
    )


def test_the_runs_table_is_ordered_by_method_then_strength_and_sorts_by_a_header(page, tmp_path):
    records = sweep_records(tmp_path, SHUFFLED_RUNS)
    for record in records:
        record.pop("comparison")
    open_report(page, write_report(records, tmp_path / "sweep.html", base_dir=tmp_path))
    methods = ["fd-kl", "cross-entropy", "ldi", "bcwi"]
    by_run = sorted(
        range(len(SHUFFLED_RUNS)),
        key=lambda i: (
            methods.index(SHUFFLED_RUNS[i][0]),
            SHUFFLED_RUNS[i][1] is not None,
            SHUFFLED_RUNS[i][1] or 0.0,
            SHUFFLED_RUNS[i][2],
        ),
    )
    assert by_run == [4, 2, 0, 1, 6, 3, 5]  # fd-kl 1.0 seeds 0, 1; fd-kl 2.0; cross-entropy …
    assert table_order(page) == by_run
    labels = page.eval_on_selector_all(
        ".fl-points tbody tr td:first-child", "cells => cells.map(c => c.textContent)"
    )
    assert labels[:3] == ["fd-kl weight=1 seed=0", "fd-kl weight=1 seed=1", "fd-kl weight=2 seed=0"]

    nfr = [r["metrics"]["test"]["negative_flip_rate"] for r in records]
    header = page.locator('.fl-points .fl-sort[data-column="negative_flip_rate"]')
    header.click()  # ascending; ties keep the run order
    assert table_order(page) == sorted(by_run, key=lambda i: nfr[i])
    assert header.text_content() == "NFR ▲"
    assert header.locator("xpath=..").get_attribute("aria-sort") == "ascending"
    header.click()  # descending
    assert table_order(page) == sorted(by_run, key=lambda i: -nfr[i])
    assert page.get_attribute('.fl-points th:has([data-column="run"])', "aria-sort") == "none"
    page.select_option(".fl-sweep select", "dev")  # another split keeps the sort
    assert table_order(page) == sorted(by_run, key=lambda i: -nfr[i])
    page.click('.fl-points .fl-sort[data-column="run"]')
    assert table_order(page) == by_run
    page.click('.fl-points .fl-sort[data-column="run"]')
    assert table_order(page) == by_run[::-1]
    assert_clean(page)


def method_palette() -> list[tuple[int, int, int]]:
    """METHOD_COLORS of report.js, as RGB."""
    script = (Path(flipless.report.__file__).parent / "assets" / "report.js").read_text()
    found = re.search(r"const METHOD_COLORS = \[(.*?)\];", script, re.DOTALL)
    return [
        tuple(int(c[i : i + 2], 16) for i in (0, 2, 4)) for c in re.findall(r"#(\w{6})", found[1])
    ]


def lab(rgb: tuple[int, int, int]) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour: distances in it follow perceived differences."""
    c = np.asarray(rgb, dtype=np.float64) / 255
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    to_xyz = np.array(  # sRGB (IEC 61966-2-1) primaries, D65 white
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = to_xyz @ linear / to_xyz.sum(axis=1)  # relative to the white point
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def css_rgb(text: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", text).groups())


def test_lab_distances_match_a_hand_computation():
    assert lab((255, 255, 255)) == pytest.approx([100.0, 0.0, 0.0], abs=1e-9)
    assert lab((0, 0, 0)) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    # sRGB red: L* 53.24, a* 80.09, b* 67.20 (the standard's published values)
    assert lab((255, 0, 0)) == pytest.approx([53.24, 80.09, 67.20], abs=0.05)


def test_the_selection_ring_and_the_focus_use_a_colour_no_method_uses(page, tmp_path):
    records = sweep_records(tmp_path, SHUFFLED_RUNS)
    for record in records:
        record.pop("comparison")
    open_report(page, write_report(records, tmp_path / "sweep.html", base_dir=tmp_path))
    palette = method_palette()
    assert len(palette) == 10
    fills = page.eval_on_selector_all(".fl-point", "dots => dots.map(d => d.getAttribute('fill'))")
    assert {tuple(int(f[i : i + 2], 16) for i in (1, 3, 5)) for f in fills} <= set(palette)
    page.locator('svg.fl-scatter[aria-label="accuracy against NFR"] [data-point="5"]').click()
    rings = page.eval_on_selector_all(
        ".fl-point.fl-selected", "dots => dots.map(d => getComputedStyle(d).stroke)"
    )
    assert len(rings) == 3 and len(set(rings)) == 1  # one selected dot in each plot
    ring = lab(css_rgb(rings[0]))
    closest = min(np.linalg.norm(ring - lab(colour)) for colour in palette)
    assert closest > 40  # the orange ring of before was 24.5 from bcwi's orange
    # Keyboard focus on a Venn region rings the region itself in that colour, with no box.
    page.focus('path[data-region="progress"]')
    page.keyboard.press("Tab")
    focused = page.evaluate(
        """() => { const el = document.activeElement, style = getComputedStyle(el);
                   return [el.getAttribute('data-region'), el.matches(':focus-visible'),
                           style.outlineStyle, style.stroke]; }"""
    )
    assert focused == ["regress", True, "none", rings[0]]
    assert_clean(page)


@pytest.mark.parametrize("width", [390, 1440])
def test_phone_and_desktop_widths_never_scroll_sideways(page, report, tmp_path, width):
    records = sweep_records(tmp_path, SHUFFLED_RUNS)
    for record in records:
        record.pop("comparison")
    sweep = write_report(records, tmp_path / "sweep.html", base_dir=tmp_path)
    page.set_viewport_size({"width": width, "height": 900})
    for name, path in [("comparison", report), ("sweep", sweep)]:
        open_report(page, path)
        if name == "sweep":  # the rightmost run's tooltip stays inside the report
            page.locator('svg.fl-scatter[aria-label="accuracy against BEC"] .fl-point').last.hover()
            tooltip = page.locator(".fl-tooltip").bounding_box()
            assert tooltip["x"] >= 0 and tooltip["x"] + tooltip["width"] <= width
        assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
        cards = page.eval_on_selector_all(
            ".fl-card, svg.fl-scatter", "els => els.map(e => e.getBoundingClientRect().right)"
        )
        assert max(cards) <= width
        shot = tmp_path / f"{name}-{width}.png"  # look at these when the layout changes
        page.screenshot(path=str(shot), full_page=True)
        assert Image.open(shot).size[0] == width
    assert_clean(page)


def test_the_widget_module_draws_redraws_and_leaves_nothing_behind(page, data, tmp_path):
    from flipless.report import ReportWidget

    first = ReportWidget(data["comparison"], title="first").payload
    records = sweep_records(tmp_path)
    for r in records:
        r.pop("comparison")
    second = ReportWidget(records, base_dir=tmp_path, title="second").payload
    page.set_content('<div id="a"></div><div id="b"></div>')
    page.evaluate(
        """async ([code, first]) => {
            const url = URL.createObjectURL(new Blob([code], {type: "text/javascript"}));
            const widget = (await import(url)).default;
            const model = (payload) => {
                const listeners = [];
                return {
                    payload,
                    get(name) { return name === "payload" ? this.payload : undefined; },
                    on(event, callback) { listeners.push(callback); },
                    off(event, callback) { listeners.splice(listeners.indexOf(callback), 1); },
                    set(payload) { this.payload = payload; listeners.forEach((f) => f()); },
                    listeners,
                };
            };
            window.models = [model(first), model(first)];
            window.cleanups = ["a", "b"].map((id, i) =>
                widget.render({ model: window.models[i], el: document.getElementById(id) }));
        }""",
        [widget_module(), first],
    )
    assert page.locator("#a h1").text_content() == "first"
    page.locator("#a .fl-bar-row", has_text="owl").first.click()
    assert page.locator("#a .fl-chip").count() == 1 and page.locator("#b .fl-chip").count() == 0
    page.evaluate("(second) => window.models[0].set(second)", second)  # new results arrive
    assert page.locator("#a h1").count() == 1 and page.locator("#a h1").text_content() == "second"
    page.locator('#a svg.fl-scatter[aria-label="accuracy against NFR"] [data-point="3"]').click()
    third = dict(second, main=dict(second["main"], title="third"))
    page.evaluate("(third) => window.models[0].set(third)", third)
    assert page.locator("#a .fl-comparison h2").text_content() == "Run ldi weight=0.5 seed=0"
    page.evaluate("window.cleanups[0](); window.models[0].listeners.length")
    assert page.evaluate("document.getElementById('a').childElementCount") == 0
    assert page.evaluate("window.models[0].listeners.length") == 0
    assert page.locator("#b h1").text_content() == "first"  # the other widget is untouched
    assert page.log.errors == [] and page.log.dialogs == [] and page.log.blocked == []


def test_reports_with_nothing_to_show_still_open_cleanly(page, tmp_path):
    labels = np.array([0, 1, 2, 1])
    perfect = write_report(flipless.compare(labels, labels, labels), tmp_path / "perfect.html")
    open_report(page, perfect)
    assert "Neither model made an error" in page.text_content(".fl-venn")
    assert "No negative flips" in page.text_content(".fl-matrix")
    assert count(page) == 0 and page.text_content(".fl-page") == "no rows"
    assert "n/a" in page.text_content('[data-key="backward_error_compatibility"]')
    assert_clean(page)
    counted = flipless.compare([0, 1, 1, 2], [1, 1, 2, 2], [0, 1, 2, 2], keep_instances=False)
    page.goto(write_report(counted, tmp_path / "counted.html").as_uri())
    page.wait_for_selector(".fl-instances")
    assert "keeps counts only" in page.text_content(".fl-instances")
    assert page.locator("[data-filter]").count() == 0  # nothing to filter
    assert_clean(page)
