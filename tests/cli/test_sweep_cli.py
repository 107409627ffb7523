"""`flipless sweep CONFIG`: the run, the final table and choice, a rerun, and errors (exit 2)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flipless.cli import app
from flipless.sweep.store import read_records

runner = CliRunner()

CONFIG = """
[data]
name = "digits"

[model]
name = "mlp"
hidden = [16]

[old]
train_epochs = 2

[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9

[train]
epochs = 2
progress = "none"

[sweep]
store = "out/results.jsonl"
threads = 1
select = "max-old-weight-within:0.5"

[[sweep.methods]]
method = "bcwi"
strengths = [0.5]
"""


@pytest.mark.slow
def test_sweep_runs_prints_the_front_and_resumes(tmp_path):
    (tmp_path / "sweep.toml").write_text(CONFIG)
    result = runner.invoke(app, ["sweep", str(tmp_path / "sweep.toml")])
    assert result.exit_code == 0, result.output
    assert "2 of 2 points to run" in result.output
    assert "Pareto front on dev, accuracy against NFR" in result.output
    assert "Chosen on dev by max-old-weight-within:0.5: bcwi old_weight=0.5 is the largest" in (
        " ".join(result.output.split())
    )
    assert "2 point(s) run now, 0 found" in result.output
    records = read_records(tmp_path / "out/results.jsonl")
    assert [r["point_id"] for r in records] == [
        "cross-entropy/seed=0",
        "bcwi/old_weight=0.5/seed=0",
    ]
    again = runner.invoke(app, ["sweep", str(tmp_path / "sweep.toml"), "--quiet"])
    assert again.exit_code == 0, again.output
    assert "points to run" not in again.output
    assert "0 point(s) run now, 2 found" in again.output
    (tmp_path / "sweep.toml").write_text(CONFIG.replace("\nepochs = 2\n", "\nepochs = 1\n"))
    changed = runner.invoke(app, ["sweep", str(tmp_path / "sweep.toml"), "--quiet"])
    assert changed.exit_code == 2
    assert "the base config differs" in changed.output
    assert "(changed: train.epochs)" in " ".join(changed.output.split())
    forced = runner.invoke(
        app, ["sweep", str(tmp_path / "sweep.toml"), "--quiet", "--force-new-store"]
    )
    assert forced.exit_code == 0, forced.output
    assert "The previous store and its files are in" in forced.output
    assert "2 point(s) run now, 0 found" in forced.output
    (moved,) = (tmp_path / "out").glob("replaced-*")
    assert len(read_records(moved / "results.jsonl")) == 2


def test_command_line_overrides_and_errors(tmp_path):
    (tmp_path / "sweep.toml").write_text(CONFIG)
    bad_backend = runner.invoke(app, ["sweep", str(tmp_path / "sweep.toml"), "--backend", "spark"])
    assert bad_backend.exit_code == 2
    assert "error: sweep.backend='spark'; expected one of ('local', 'ray')" in bad_backend.output
    bad_store = runner.invoke(app, ["sweep", str(tmp_path / "sweep.toml"), "--store", "r.csv"])
    assert bad_store.exit_code == 2 and "expected a file ending in .jsonl" in bad_store.output
    (tmp_path / "broken.toml").write_text(CONFIG.replace('"bcwi"', '"bcw"'))
    broken = runner.invoke(app, ["sweep", str(tmp_path / "broken.toml")])
    assert broken.exit_code == 2
    assert "unknown method 'bcw'" in broken.output and "Traceback" not in broken.output
    missing = runner.invoke(app, ["sweep", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and "no config file" in missing.output
