"""What people expect of a command line: --version, -h, results on stdout and the rest on
stderr, --json -, --quiet, NO_COLOR without any style, one-line warnings, examples in --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flipless import __version__
from flipless.cli import app, show_warning
from flipless.errors import FliplessWarning

runner = CliRunner()
COMMANDS = ("compare", "gate", "predict", "ensemble", "demo", "train", "interpolate", "sweep")
COMMANDS += ("report",)
ESCAPE = "\x1b["


@pytest.fixture
def files(tmp_path):
    labels = np.array([0, 1, 2] * 4)
    paths = []
    for name, prediction in (("old.csv", labels), ("new.csv", np.roll(labels, 1))):
        frame = pd.DataFrame({"id": range(12), "label": labels, "pred": prediction})
        frame.to_csv(tmp_path / name, index=False)
        paths.append(str(tmp_path / name))
    return paths


def flipless(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command (``python -m flipless.cli``), stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "flipless.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )


def test_version_and_short_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith(f"flipless {__version__} (Python")
    assert runner.invoke(app, ["-h"]).exit_code == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_h_and_shows_an_example(command):
    result = runner.invoke(app, [command, "-h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout and f"flipless {command}" in result.stdout


def test_json_dash_writes_only_json_to_stdout(files):
    result = flipless("compare", *files, "--json", "-")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # the whole of stdout is the document
    assert document["counts"]["total"] == 12
    assert "Per true class" in result.stderr  # the tables went to stderr
    assert not any(path.endswith("-") for path in os.listdir("."))  # no file named '-'


def test_gate_json_dash(files):
    result = runner.invoke(app, ["gate", *files, "--max-nfr", "1", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] is True
    assert "PASS" in result.stderr


def test_quiet_silences_log_lines_but_not_results(files, tmp_path):
    out = tmp_path / "c.json"
    loud = runner.invoke(app, ["compare", *files, "--json", str(out)])
    quiet = runner.invoke(app, ["--quiet", "compare", *files, "--json", str(out)])
    assert loud.exit_code == quiet.exit_code == 0
    assert f"Wrote {out}" in loud.stderr.replace("\n", "")
    assert quiet.stderr == "" and quiet.stdout == loud.stdout


@pytest.mark.slow  # four processes of the real command
def test_no_color_removes_every_style(files):
    forced = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    styled = flipless("compare", *files, env=forced)
    plain = flipless("compare", *files, env={**forced, "NO_COLOR": "1"})
    assert styled.returncode == plain.returncode == 0, plain.stderr
    assert ESCAPE in styled.stdout  # the check can fail: a terminal gets styles
    assert ESCAPE not in plain.stdout + plain.stderr  # not even bold
    error = flipless("compare", files[0], "missing.csv", env={**forced, "NO_COLOR": "1"})
    assert error.returncode == 2 and ESCAPE not in error.stderr
    usage = flipless("compare", env={**forced, "NO_COLOR": "1"})
    assert usage.returncode == 2 and ESCAPE not in usage.stderr  # Typer's own panels too


def test_warnings_are_one_line_without_source(capsys):
    show_warning(FliplessWarning("the rules\n  match   no tensor"), FliplessWarning, "/x/y.py", 3)
    assert capsys.readouterr().err == "warning: the rules match no tensor\n"
    shown = warnings.showwarning
    try:
        assert runner.invoke(app, ["version"]).exit_code == 0
        assert warnings.showwarning is show_warning  # the CLI installs it
    finally:
        warnings.showwarning = shown


def test_option_names_in_messages(files):
    result = runner.invoke(app, ["compare", *files, "--top-k", "x"])
    assert result.exit_code == 2 and "'--top-k'" in result.stderr
    result = runner.invoke(app, ["gate", *files, "--max-nfr", "3"])
    assert result.exit_code == 2 and "--max-nfr" in result.stderr
