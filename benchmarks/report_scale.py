"""Does a report of a 100,000-instance comparison open and filter smoothly?

A synthetic but realistic comparison per size (default 1,000, 10,000 and 100,000 samples):
10 classes, an old model about 89 % accurate and a new one about 90 %, their errors
correlated through a shared per-sample difficulty (so that most old errors stay errors and a
few percent flip), scores for both (so the table has confidences), integer ids, and a slice
with three groups given also as metadata (so its bars filter the table). The first size is
the baseline; every figure is also given as a ratio to it, measured in the same run.

For each size: the time to write the report, the file's size, and in Debian's Chromium
(headless, via Playwright, every network request blocked):

* ``load``: navigation start to the load event (parse the file with its embedded JSON, run
  the script, which parses the data and draws everything);
* ``first paint``: navigation start to the first contentful paint;
* interactions, each the median of ``--repeats`` timings inside the page from the synthetic
  click (or input) to the end of the forced layout that follows it: a Venn region (filter),
  a class bar (a second filter), the next page, a search for a substring, sorting by the new
  model's confidence, and "show all rows" (the largest table).

With ``--thumbnails`` the largest size is written once more with a 28×28 thumbnail for every
row where a model is wrong (Fashion-MNIST test images when the Debian package is installed,
else noise), to show what images add to the file and its opening.

Usage: python benchmarks/report_scale.py [--sizes 1000 10000 100000] [--repeats 7]
                                         [--thumbnails] [--output PATH]
Needs /usr/bin/chromium (apt-get install chromium). Writes benchmarks/results/report_scale.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import flipless
from common import add_output_options, load_average, machine_facts, output_path, write_atomically
from flipless.report import write_report

CHROMIUM = "/usr/bin/chromium"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
CLASSES = 10
GROUPS = np.array(["camera", "scanner", "upload"])


def synthetic_update(size: int, seed: int = 0) -> tuple[flipless.Comparison, np.ndarray]:
    """Old (~89 %) and new (~90 %) scores with errors correlated through a shared difficulty."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size)
    difficulty = rng.normal(size=size)

    def scores(margin: float) -> np.ndarray:
        logits = rng.normal(size=(size, CLASSES)).astype(np.float32)
        push = margin - 1.6 * difficulty + 0.4 * rng.normal(size=size)
        logits[np.arange(size), labels] += push.astype(np.float32)
        return logits

    group = GROUPS[rng.integers(0, len(GROUPS), size)]
    comparison = flipless.compare(
        scores(4.0),
        scores(4.15),
        labels,
        ids=np.arange(100_000, 100_000 + size),
        class_names=[f"class {k}" for k in range(CLASSES)],
        slices={"source": group},
    )
    return comparison, group


def thumbnail_images(size: int) -> np.ndarray:
    """28×28 uint8 images: Fashion-MNIST test images repeated, or noise when not installed."""
    if FASHION_MNIST.is_file():
        raw = np.frombuffer(gzip.decompress(FASHION_MNIST.read_bytes()), np.uint8, offset=16)
        images = raw.reshape(-1, 28, 28)
        return images[np.arange(size) % images.shape[0]]
    return np.random.default_rng(0).integers(0, 256, (size, 28, 28), dtype=np.uint8)


_INTERACT = """async ([selector, kind, text]) => {
    const target = document.querySelector(selector);
    const start = performance.now();
    if (kind === "input") {
        target.value = text;
        target.dispatchEvent(new Event("input", { bubbles: true }));
    } else if (kind === "check") {
        target.checked = !target.checked;
        target.dispatchEvent(new Event("change", { bubbles: true }));
    } else {
        target.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    }
    void document.body.offsetHeight;  // force style and layout of what changed
    const elapsed = performance.now() - start;
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    return elapsed;
}"""

#: (name, selector, kind, text, how to undo it): each interaction is timed, then undone.
INTERACTIONS = (
    ("venn_filter", 'path[data-region="regress"]', "click", None, "same"),
    ("class_filter", '.fl-groups .fl-bar-row[data-filter="class:3"]', "click", None, "same"),
    ("next_page", ".fl-next", "click", None, ".fl-first"),
    ("search", ".fl-search", "input", "1234", "clear"),
    ("sort_confidence", '.fl-sort[data-column="new_confidence"]', "click", None, "none"),
    ("all_rows", ".fl-all-rows", "check", None, "same"),
)


def measure_in_browser(browser: Any, path: Path, repeats: int) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("file:", "data:"))
            else (blocked.append(route.request.url), route.abort())
        ),
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_selector(".fl-count")
    timing = page.evaluate(
        """() => {
            const nav = performance.getEntriesByType("navigation")[0];
            const paint = performance.getEntriesByName("first-contentful-paint")[0];
            return { load: nav.loadEventStart, paint: paint ? paint.startTime : null };
        }"""
    )
    figures: dict[str, Any] = {"load_ms": timing["load"], "first_paint_ms": timing["paint"]}
    for name, selector, kind, text, undo in INTERACTIONS:
        times = []
        for _ in range(repeats):
            times.append(page.evaluate(_INTERACT, [selector, kind, text]))
            if undo == "same":
                page.evaluate(_INTERACT, [selector, kind, text])
            elif undo == "clear":
                page.evaluate(_INTERACT, [selector, "input", ""])
            elif undo != "none":
                page.evaluate(_INTERACT, [undo, "click", None])
        figures[f"{name}_ms"] = statistics.median(times)
    figures["rows_matching_by_default"] = int(page.get_attribute(".fl-count", "data-count"))
    context.close()
    if blocked or errors:
        raise RuntimeError(f"the report misbehaved: blocked requests {blocked}, errors {errors}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--thumbnails", action="store_true")
    add_output_options(parser, "report_scale")
    args = parser.parse_args()
    args.output = output_path(args, "report_scale")
    from playwright.sync_api import sync_playwright

    loads = {"start": load_average()}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        warm_up, _ = synthetic_update(args.sizes[0], seed=1)  # the browser's first page is slow
        write_report(warm_up, Path(folder) / "warm-up.html")
        measure_in_browser(browser, Path(folder) / "warm-up.html", 1)
        cases = [(size, False) for size in args.sizes]
        if args.thumbnails:
            cases.append((args.sizes[-1], True))
        for size, with_thumbnails in cases:
            comparison, group = synthetic_update(size)
            path = Path(folder) / f"report-{size}{'-thumbnails' if with_thumbnails else ''}.html"
            started = time.perf_counter()
            write_report(
                comparison,
                path,
                metadata={"source": group},
                inputs=thumbnail_images(size) if with_thumbnails else None,
            )
            write_s = time.perf_counter() - started
            row = {
                "size": size,
                "thumbnails": with_thumbnails,
                "accuracy_old": comparison.accuracy_old,
                "accuracy_new": comparison.accuracy_new,
                "negative_flip_rate": comparison.negative_flip_rate,
                "write_s": write_s,
                "file_bytes": path.stat().st_size,
                **measure_in_browser(browser, path, args.repeats),
            }
            rows.append(row)
            print(
                f"{size:>7,} rows{' + thumbnails' if with_thumbnails else '':13}: "
                f"file {row['file_bytes'] / 2**20:6.2f} MiB, write {write_s:5.2f} s, "
                f"load {row['load_ms']:7.1f} ms, first paint {row['first_paint_ms'] or 0:7.1f} ms"
            )
        browser.close()
    loads["end"] = load_average()
    baseline = rows[0]
    figures = [key for key in baseline if key.endswith(("_ms", "_s", "_bytes"))]
    for row in rows:
        row["ratio_to_baseline"] = {
            key: row[key] / baseline[key] if baseline[key] else None for key in figures
        }
    largest = max((row for row in rows if not row["thumbnails"]), key=lambda row: row["size"])
    print(
        f"\nmilliseconds (interactions: medians of {args.repeats}); last column: the "
        f"{largest['size']:,}-row report ÷ the {baseline['size']:,}-row one"
    )
    header = "".join(f"{r['size']:>10,}{'+t' if r['thumbnails'] else '  '}" for r in rows)
    print(f"{'':18}{header}     ratio")
    for key in [k for k in figures if k.endswith("_ms")]:
        cells = "".join(f"{row[key] or 0:10.1f}  " for row in rows)
        print(f"{key.removesuffix('_ms'):18}{cells}  ×{largest['ratio_to_baseline'][key] or 0:.1f}")
    sizes = "".join(f"{row['file_bytes'] / 2**20:8.2f} MiB" for row in rows)
    print(f"{'file size':18}{sizes}     ×{largest['ratio_to_baseline']['file_bytes']:.1f}")
    result = {
        "benchmark": "report_scale",
        "flipless_version": flipless.__version__,
        "repeats": args.repeats,
        "rows": rows,
        "machine": machine_facts(loads),
    }
    write_atomically(args.output, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
