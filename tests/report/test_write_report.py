"""write_report end to end (without a browser): sources, the embedded data, escaping, the file."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat

import numpy as np
import pandas as pd
import pytest

import flipless
from flipless.errors import FileFormatError, FliplessWarning, InputError, MismatchError
from flipless.report import write_report
from flipless.report.html import render_html, script_json
from flipless.report.payload import build_payload
from flipless.report.sources import load_source

EVIL = "</script><script>alert(1)</script>"
N = 40


def make_comparison(seed: int = 0, names=("cat", EVIL, "owl"), size: int = N):
    """The same old model (seed 0) against a new model drawn with ``seed``."""
    labels = np.arange(size) % 3
    old = np.where(np.random.default_rng(0).random(size) < 0.7, labels, (labels + 1) % 3)
    new = np.where(np.random.default_rng(seed + 1).random(size) < 0.8, labels, (labels + 2) % 3)
    return flipless.compare(
        old,
        new,
        labels,
        ids=[f"id-{i}" for i in range(size)],
        class_names=list(names),
        slices={"half": np.arange(size) < size // 2},
    )


def embedded(html: str) -> dict[str, object]:
    """The JSON documents of a report, by element id."""
    found = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', html, re.S)
    return {name: json.loads(text) for name, text in found}


def test_script_json_escapes_everything_that_could_end_the_element():
    value = {"a": "</script><!-- & \u2028\u2029 >"}
    text = script_json(value)
    assert not re.search("[<>&\u2028\u2029]", text)
    assert json.loads(text) == value


def test_report_of_one_comparison(tmp_path):
    comparison = make_comparison()
    texts = [f"text <b>{i}</b>" for i in range(N)]
    path = write_report(
        comparison,
        tmp_path / "report.html",
        texts=texts,
        metadata={"half": list(np.arange(N) < N // 2), "source": ["<img src=x>"] * N},
        inputs=np.random.default_rng(1).random((N, 8, 8)),
        title="A <title> & more",
    )
    html = path.read_text("utf-8")
    assert "<title>A &lt;title&gt; &amp; more</title>" in html
    assert EVIL not in html and "<img src=x>" not in html and "<b>" not in html
    assert "http://" not in html and "https://" not in html
    documents = embedded(html)
    main, data = documents["flipless-payload"], documents["flipless-comparison-0"]
    assert main["schema"] == "flipless.report/1" and main["sweep"] is None
    assert main["dataset"]["ids"][:2] == ["id-0", "id-1"]
    assert main["dataset"]["texts"] == texts
    assert data["class_names"][1] == EVIL  # kept as data, shown as text by the page
    assert data["counts"] == comparison.counts.as_dict()
    assert data["slices"][0]["filterable"] is True  # the metadata column reproduces the slice
    wrong = ~(comparison.instances.old_correct & comparison.instances.new_correct)
    assert sorted(map(int, main["dataset"]["thumbnails"])) == np.flatnonzero(wrong).tolist()
    assert all(
        u.startswith("data:image/png;base64,") for u in main["dataset"]["thumbnails"].values()
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_policy_allows_exactly_the_inlined_script_and_style(tmp_path):
    html = write_report(make_comparison(), tmp_path / "r.html").read_text("utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)

    def digest(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    assert f"script-src 'sha256-{digest(script)}'" in policy
    assert f"style-src 'sha256-{digest(style)}'" in policy
    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert html.count("<script") == 3  # the payload, one comparison, the code


def test_report_of_named_comparisons_and_of_records(tmp_path):
    first, second = make_comparison(0), make_comparison(1)
    named = build_payload(load_source({"plain": first, "fd-kl": second}))
    assert named.main["comparisons"] == ["plain", "fd-kl"]
    assert [p["comparison"] for p in named.main["sweep"]["points"]] == [0, 1]
    assert named.main["sweep"]["splits"] == ["given"]
    assert named.comparisons[1]["counts"] == second.counts.as_dict()

    first.to_json(str(tmp_path / "a.json"))
    records = []
    for index, comparison in enumerate((first, second)):
        test = {
            "accuracy": comparison.accuracy_new,
            "old_accuracy": comparison.accuracy_old,
            "negative_flip_rate": comparison.negative_flip_rate,
            "positive_flip_rate": comparison.positive_flip_rate,
            "relative_negative_flip_rate": comparison.relative_negative_flip_rate,
            "backward_trust_compatibility": comparison.backward_trust_compatibility,
            "backward_error_compatibility": comparison.backward_error_compatibility,
            "size": N,
        }
        records.append(
            {
                "schema": "flipless.sweep-record/1",
                "point_id": f"fd-kl/weight={index}/seed=0",
                "method": "fd-kl",
                "kind": "loss",
                "strength_name": "weight",
                "strength": float(index),
                "seed": 0,
                "metrics": {"test": test},
                "comparison_path": "a.json" if index == 0 else "missing.json",
            }
        )
    with pytest.warns(FliplessWarning, match="missing.json does not exist"):
        source = load_source(records, base_dir=tmp_path)
    assert [p.comparison for p in source.points] == [0, None]
    assert source.comparisons[0][1].counts == first.counts


def test_a_results_store_is_read_through_the_sweep_reader(tmp_path):
    from flipless.sweep.store import ResultsStore

    comparison = make_comparison()
    (tmp_path / "points").mkdir()
    comparison.to_json(str(tmp_path / "points" / "c.json"))
    metrics = {
        "accuracy": 0.8,
        "old_accuracy": 0.7,
        "negative_flip_rate": 0.1,
        "positive_flip_rate": 0.2,
        "relative_negative_flip_rate": 0.5,
        "backward_trust_compatibility": 0.9,
        "backward_error_compatibility": float("nan"),
        "size": N,
    }
    for suffix in (".jsonl", ".parquet"):
        store = ResultsStore(tmp_path / f"results{suffix}")
        store.append(
            {
                "schema": "flipless.sweep-record/1",
                "point_id": "ldi/mix=0.5/seed=1",
                "method": "ldi",
                "kind": "loss",
                "strength_name": "mix",
                "strength": 0.5,
                "seed": 1,
                "config": {"x": 1},
                "metrics": {"dev": metrics, "test": metrics},
                "comparison_path": "points/c.json",
                "model_path": None,
                "duration_s": 1.0,
                "finished_at": "2026-11-25T16:40:00+00:00",
                "versions": {},
            }
        )
        html = write_report(tmp_path / f"results{suffix}", tmp_path / "s.html").read_text()
        main = embedded(html)["flipless-payload"]
        assert main["sweep"]["points"][0]["label"] == "ldi mix=0.5 seed=1"
        assert main["sweep"]["metrics"]["dev"]["backward_error_compatibility"] == [None]
        assert embedded(html)["flipless-comparison-0"]["counts"] == comparison.counts.as_dict()


def test_a_comparison_json_path(tmp_path):
    comparison = make_comparison()
    comparison.to_json(str(tmp_path / "update.json"))
    source = load_source(tmp_path / "update.json")
    assert source.points is None and source.comparisons[0][0] == "update"
    assert source.comparisons[0][1].counts == comparison.counts


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("nowhere.json", FileFormatError, "No such file"),
        (42, InputError, "Cannot make a report from a int"),
        ({}, InputError, "mapping of comparisons is empty"),
        ({"a": 1}, InputError, "Entry 'a' is a int; expected a Comparison"),
        ([], InputError, "no records yet"),
    ],
)
def test_bad_sources(tmp_path, source, error, message):
    with pytest.raises(error, match=message):
        write_report(source, tmp_path / "r.html")


def test_wrong_file_kinds(tmp_path):
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(FileFormatError, match=r"suffix '.csv'; expected .json"):
        load_source(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text('{"schema": "other"}')
    with pytest.raises(FileFormatError, match=r"Expected a 'flipless\.comparison' JSON document"):
        load_source(tmp_path / "x.json")


def test_table_inputs_are_checked(tmp_path):
    comparison = make_comparison()
    out = tmp_path / "r.html"
    with pytest.raises(MismatchError, match=r"texts has 3 entries; expected one per row .*\(40\)"):
        write_report(comparison, out, texts=["a", "b", "c"])
    with pytest.raises(MismatchError, match="metadata column 'x' has 1 entries"):
        write_report(comparison, out, metadata=pd.DataFrame({"x": [1]}))
    with pytest.raises(InputError, match="Both inputs= and renderer= were given"):
        write_report(comparison, out, inputs=np.zeros((N, 8, 8)), renderer=lambda i: b"")
    with pytest.raises(InputError, match="texts is one string"):
        write_report(comparison, out, texts="one")
    with pytest.raises(InputError, match="renderer is a int"):
        write_report(comparison, out, renderer=3)
    counted = flipless.compare([0, 1], [1, 1], [0, 1], keep_instances=False)
    with pytest.raises(InputError, match="texts given, but no comparison keeps per-instance"):
        write_report(counted, out, texts=["a", "b"])
    with pytest.raises(InputError, match="expected a positive integer or None"):
        write_report({"a": comparison}, out, max_instances_per_point=0)
    with pytest.raises(InputError, match="does not exist"):
        write_report(comparison, tmp_path / "no" / "r.html")
    with pytest.raises(InputError, match="is a folder"):
        write_report(comparison, tmp_path)
    assert not out.exists()


def test_comparisons_of_one_report_must_share_their_samples():
    other = make_comparison(size=N + 1)
    with pytest.raises(MismatchError, match="differ in their sample ids"):
        build_payload(load_source({"a": make_comparison(), "b": other}))


def test_renderer_thumbnails_and_capped_points():
    comparison = make_comparison()
    calls = []

    def renderer(index: int) -> str:
        calls.append(index)
        from PIL import Image

        return Image.new("L", (2, 2), index % 256)

    payload = build_payload(
        load_source({"a": comparison, "b": comparison}),
        renderer=renderer,
        max_instances_per_point=5,
    )
    rows = payload.comparisons[0]["instances"]
    assert rows["embedded"] == 5 and rows["total"] == N
    kept = comparison.instances
    both_wrong = ~kept.old_correct & ~kept.new_correct
    in_turn = [np.flatnonzero(m) for m in (kept.negative_flip, kept.positive_flip, both_wrong)]
    assert rows["row"] == sorted(np.concatenate(in_turn)[:5].tolist())
    assert sorted(set(calls)) == sorted(map(int, payload.main["dataset"]["thumbnails"]))


def test_a_counts_only_comparison_makes_a_report_without_a_table(tmp_path):
    counted = flipless.compare([0, 1, 2, 2], [1, 1, 2, 0], [0, 1, 2, 2], keep_instances=False)
    html = write_report(counted, tmp_path / "r.html").read_text()
    documents = embedded(html)
    assert documents["flipless-payload"]["dataset"] is None
    assert documents["flipless-comparison-0"]["instances"] is None


def test_render_html_is_deterministic():
    payload = build_payload(load_source(make_comparison()))
    assert render_html(payload) == render_html(payload)


@pytest.mark.slow  # a fresh interpreter: a few seconds of imports
def test_the_report_needs_neither_torch_nor_the_training_code(tmp_path):
    """flipless.report reads results: writing a report of a store imports no torch."""
    import subprocess
    import sys
    import textwrap

    comparison = make_comparison()
    comparison.to_json(str(tmp_path / "c.json"))
    record = {
        "schema": "flipless.sweep-record/1",
        "point_id": "a/weight=1.0/seed=0",
        "method": "a",
        "strength": 1.0,
        "seed": 0,
        "metrics": {
            "test": {
                "accuracy": 0.5,
                "old_accuracy": 0.5,
                "negative_flip_rate": 0.1,
                "backward_trust_compatibility": 0.8,
                "backward_error_compatibility": 0.4,
            }
        },
        "comparison_path": "c.json",
    }
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from flipless.report import write_report
        write_report({str(tmp_path / "results.jsonl")!r}, {str(tmp_path / "r.html")!r},
                     inputs=np.zeros(({N}, 8, 8)))
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("flipless.train"))
        print(loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
