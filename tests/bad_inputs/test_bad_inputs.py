"""Bad input, through the real command line: exit 2, one clear message, no traceback, and no
file changed or left behind.

Every case runs the ``flipless`` application (``flipless.cli:app``, what the installed script
calls) in a fresh folder holding copies of the same inputs; ``driver.py`` runs all the cases
in two subprocesses started in parallel (importing flipless once per process, not once per
case). Each folder is snapshotted (names, sizes, contents) before and compared after.

The cases are those of issue 16 (tracebacks, silent acceptance, hangs) and the earlier ones
that already gave a clear error; add a case here with every new error message a user can meet.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DRIVER = Path(__file__).with_name("driver.py")
pytestmark = pytest.mark.slow  # two processes running every case: 10-40 s in all

RUN = """seed = 0
output_dir = "{output_dir}"
[data]
name = "digits"
[model]
name = "mlp"
hidden = [8]
[old]
train_epochs = 1
[loss]
preset = "{preset}"
{loss}
[optimizer]
lr = {lr}
[train]
epochs = 1
progress = "none"
"""
SWEEP = """seed = 0
[data]
name = "digits"
[model]
name = "mlp"
hidden = [8]
[old]
train_epochs = 1
[optimizer]
lr = {lr}
[train]
epochs = 1
progress = "none"
[sweep]
store = "sweep/results.jsonl"
seeds = [0]
[[sweep.methods]]
method = "{method}"
strengths = [{strength}]
"""


@dataclass(frozen=True)
class Case:
    """A command line that must fail with exit 2 and ``message`` on standard error."""

    id: str
    args: tuple[str, ...]
    message: str


SLICED = ("gate", "old.csv", "new.csv", "--slice", "region")
MERGE = ("interpolate", "old.safetensors", "new.safetensors", "--out", "merged")

CASES = [
    # compare and gate: files, columns, options
    Case("compare-missing-file", ("compare", "old.csv", "missing.csv"), "missing.csv does not"),
    Case("compare-folder", ("compare", "old.csv", "."), "is a folder"),
    Case("compare-no-slice-column", ("compare", "old.csv", "new.csv", "--slice", "nope"), "nope"),
    Case(
        "compare-top-flips-negative",
        ("compare", "old.csv", "new.csv", "--top-flips", "-1"),
        "'--top-flips'",
    ),
    Case("compare-top-k-text", ("compare", "old.csv", "new.csv", "--top-k", "a"), "'--top-k'"),
    Case("compare-top-k-zero", ("compare", "old.csv", "new.csv", "--top-k", "0"), "'--top-k'"),
    Case(
        "compare-index-beyond-class-names",
        ("compare", "old.csv", "big.csv", "--class-names", "a,b,c"),
        "5000000",
    ),
    Case("compare-missing-argument", ("compare", "old.csv"), "Missing argument"),
    Case("gate-no-rule", ("gate", "old.csv", "new.csv"), "No gate rule given"),
    Case("gate-nfr-above-one", ("gate", "old.csv", "new.csv", "--max-nfr", "2"), "--max-nfr"),
    Case("gate-nfr-text", ("gate", "old.csv", "new.csv", "--max-nfr", "two"), "'--max-nfr'"),
    Case(
        "gate-significance-zero",
        ("gate", "old.csv", "new.csv", "--significance", "0"),
        "--significance",
    ),
    Case(
        "gate-slice-nfr-without-slices",
        ("gate", "old.csv", "new.csv", "--max-slice-nfr", "0.1"),
        "--slice",
    ),
    Case(
        "gate-min-slice-size-negative",
        (*SLICED, "--max-slice-nfr", "0.5", "--min-slice-size", "-3"),
        "'--min-slice-size'",
    ),
    Case(
        "compare-no-id-column",
        ("compare", "old.csv", "new.csv", "--id-col", "nosuch"),
        "old.csv has no column 'nosuch' (the id)",
    ),
    Case("compare-single-array-npz", ("compare", "single.npz", "old.csv"), "a single array"),
    Case("compare-json-folder", ("compare", "old.csv", "new.csv", "--json", "."), "is a folder"),
    Case(
        "compare-json-no-folder",
        ("compare", "old.csv", "new.csv", "--json", "nodir/c.json"),
        "nodir does not exist",
    ),
    Case(
        "gate-json-folder",
        ("gate", "old.csv", "new.csv", "--max-nfr", "1", "--json", "."),
        "is a folder",
    ),
    # interpolate
    Case(
        "interpolate-torch-file",
        ("interpolate", "old.pt", "old.pt", "--out", "merged", "--old-weight", "0.5"),
        "safetensors",
    ),
    Case(
        "interpolate-soup-weights",
        (*MERGE, "--old-weight", "0.5", "--soup-weights", "x"),
        "--soup-weights 'x'",
    ),
    Case(
        "interpolate-rule-value",
        (*MERGE, "--old-weight", "0.5", "--rule", "head=x"),
        "--rule 'head=x'",
    ),
    Case(
        "interpolate-rule-pattern", (*MERGE, "--old-weight", "0.5", "--rule", "=0.5"), "PATTERN=α"
    ),
    Case(
        "interpolate-rule-matches-nothing",
        (*MERGE, "--old-weight", "0.5", "--rule", "haed.*=0"),
        "closest names are head.",
    ),
    Case(
        "interpolate-rows",
        (*MERGE, "--old-weight", "0.5", "--new-class-rows", "head.bias=a"),
        "--new-class-rows",
    ),
    Case(
        "interpolate-rows-no-equals",
        (*MERGE, "--old-weight", "0.5", "--new-class-rows", "head.bias"),
        "TENSOR=ROWS",
    ),
    Case("interpolate-dev-unknown", (*MERGE, "--select", "--dev", "nosuch"), "--dev 'nosuch'"),
    Case("interpolate-no-weight", MERGE, "--old-weight"),
    Case(
        "interpolate-missing-old",
        ("interpolate", "none.safetensors", "new.safetensors", "--out", "m", "--old-weight", "0.5"),
        "none.safetensors",
    ),
    Case("interpolate-old-weight-range", (*MERGE, "--old-weight", "2"), "'--old-weight'"),
    Case(
        "interpolate-integer-buffers",
        (*MERGE, "--old-weight", "0.5", "--integer-buffers", "odd"),
        "--integer-buffers 'odd'",
    ),
    Case(
        "interpolate-shard-size",
        (*MERGE, "--old-weight", "0.5", "--max-shard-gb", "0"),
        "--max-shard-gb 0",
    ),
    # train and sweep: the whole config checked before anything runs
    Case("train-invalid-yaml", ("train", "broken.yaml"), "is not valid YAML"),
    Case("sweep-backend", ("sweep", "sweep-lr.toml", "--backend", "nosuch"), "nosuch"),
    Case("train-missing-config", ("train", "nosuch.toml"), "no config file"),
    Case("train-loss-weight-text", ("train", "heavy.toml"), "weight='heavy'"),
    Case("train-negative-lr", ("train", "lr.toml"), "optimizer.lr"),
    Case("train-output-dir-a-file", ("train", "taken.toml"), "is a file"),
    Case("train-unknown-key", ("train", "typo.toml"), "unknown key"),
    Case("train-missing-data-path", ("train", "nodata.toml"), "nodata.csv does not exist"),
    Case("train-progress", ("train", "lr.toml", "--progress", "loud"), "--progress 'loud'"),
    Case("sweep-unknown-method", ("sweep", "sweep-method.toml"), "unknown method"),
    Case("sweep-mix-above-one", ("sweep", "sweep-strength.toml"), "strengths"),
    Case("sweep-negative-lr", ("sweep", "sweep-lr.toml"), "optimizer.lr"),
    Case("sweep-workers", ("sweep", "sweep-lr.toml", "--workers", "0"), "workers"),
    # report, predict, ensemble, the application itself
    Case("report-missing", ("report", "missing.json", "--out", "r.html"), "missing.json"),
    Case(
        "report-instances-without-json",
        ("report", "old.csv", "--instances", "rows.parquet", "--out", "r.html"),
        "not a comparison JSON",
    ),
    Case(
        "compare-instances-missing-folder",
        ("compare", "old.csv", "new.csv", "--instances", "nofolder/rows.parquet"),
        "the folder nofolder does not exist",
    ),
    Case(
        "predict-missing-model",
        ("predict", "none.safetensors", "old.csv", "--out", "p.csv"),
        "none.safetensors",
    ),
    Case(
        "predict-missing-data",
        ("predict", "old.safetensors", "nodata.csv", "--out", "p.csv"),
        "nodata.csv: no such file or folder",
    ),
    Case(
        "predict-missing-model-folder",
        ("predict", "nomodel/", "old.csv", "--out", "p.csv"),
        "no model checkpoint at nomodel",
    ),
    Case(
        "predict-no-overwrite",
        ("predict", "old.safetensors", "old.csv", "--out", "new.csv"),
        "overwrite",
    ),
    Case("ensemble-one-file", ("ensemble", "old.csv", "--out", "e.csv"), "at least two"),
    Case(
        "ensemble-average",
        ("ensemble", "old.csv", "new.csv", "--out", "e.csv", "--average", "nope"),
        "--average",
    ),
    Case("unknown-command", ("nosuch",), "No such command"),
]


def write_inputs(folder: Path) -> None:
    """The files every case folder starts with."""
    import torch

    from flipless.models.files import save_model
    from flipless.models.vision import MLP

    labels = np.array([0, 1, 2] * 4)
    old = labels.copy()
    new = np.roll(labels, 1)
    region = ["north"] * 6 + ["south"] * 6
    for name, prediction in (("old.csv", old), ("new.csv", new)):
        frame = pd.DataFrame({"id": range(12), "label": labels, "pred": prediction})
        frame.assign(region=region).to_csv(folder / name, index=False)
    stray = old.copy()
    stray[0] = 5_000_000
    pd.DataFrame({"id": range(12), "label": labels, "pred": stray}).to_csv(
        folder / "big.csv", index=False
    )
    for name, seed in (("old.safetensors", 0), ("new.safetensors", 1)):
        torch.manual_seed(seed)
        save_model(MLP(4, 3, hidden=(5,)), folder / name)
    torch.save(MLP(4, 3, hidden=(5,)).state_dict(), folder / "old.pt")
    with (folder / "single.npz").open("wb") as handle:  # np.save: one array, not an archive
        np.save(handle, np.arange(3))
    (folder / "taken").write_text("a file, not a folder\n")
    run = {"output_dir": "run", "preset": "fd-kl", "loss": "", "lr": "0.05"}
    configs = {
        "heavy.toml": RUN.format(**{**run, "loss": 'weight = "heavy"'}),
        "lr.toml": RUN.format(**{**run, "lr": "-1"}),
        "taken.toml": RUN.format(**{**run, "output_dir": "taken"}),
        "typo.toml": RUN.format(**run).replace("[train]", "[trian]"),
        "nodata.toml": RUN.format(**run).replace(
            'name = "digits"', 'name = "table"\npath = "nodata.csv"'
        ),
        "sweep-method.toml": SWEEP.format(lr="0.05", method="fd-kll", strength="1"),
        "sweep-strength.toml": SWEEP.format(lr="0.05", method="ldi", strength="2"),
        "sweep-lr.toml": SWEEP.format(lr="-1", method="fd-kl", strength="1"),
    }
    configs["broken.yaml"] = "seed: [1\n"
    for name, text in configs.items():
        (folder / name).write_text(text)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: its relative path → a digest of its content."""
    return {
        str(path.relative_to(folder)): (
            "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        )
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run every case; its result plus its folder's snapshots before and after."""
    root = tmp_path_factory.mktemp("bad-inputs")
    inputs = root / "inputs"
    inputs.mkdir()
    write_inputs(inputs)
    before = snapshot(inputs)
    folders = {}
    for case in CASES:
        folders[case.id] = shutil.copytree(inputs, root / case.id)
    batches = [CASES[0::2], CASES[1::2]]

    def run(number: int, batch: list[Case]) -> dict[str, dict]:
        cases = root / f"cases-{number}.json"
        results = root / f"results-{number}.json"
        listed = [{"id": c.id, "args": list(c.args), "cwd": str(folders[c.id])} for c in batch]
        cases.write_text(json.dumps(listed))
        completed = subprocess.run(
            [sys.executable, str(DRIVER), str(cases), str(results)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return json.loads(results.read_text())

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        found: dict[str, dict] = {}
        for part in pool.map(run, range(2), batches):
            found.update(part)
    return {
        case.id: {**found[case.id], "before": before, "after": snapshot(folders[case.id])}
        for case in CASES
    }


def test_case_ids_are_unique():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_with_one_clear_message(outcomes, case):
    outcome = outcomes[case.id]
    shown = f"{case.args}\nstdout:\n{outcome['stdout']}\nstderr:\n{outcome['stderr']}"
    assert "Traceback" not in outcome["stdout"] + outcome["stderr"], shown
    assert outcome["code"] == 2, shown
    stderr = " ".join(outcome["stderr"].split())  # rich wraps long lines; compare words
    assert case.message in stderr, shown
    assert stderr.count("error:") + stderr.count("─ Error ─") == 1, shown
    assert outcome["after"] == outcome["before"], f"files changed or left behind: {shown}"
