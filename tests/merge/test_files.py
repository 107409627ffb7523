"""`flipless interpolate`: streamed file interpolation, policies from options, the dev search."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from flipless.cli import app
from flipless.merge.selection import WeightRule
from flipless.train import MLP, load_model, save_model

runner = CliRunner()


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(0)
    old, new = MLP(64, 10, hidden=(16,)), MLP(64, 10, hidden=(16,))
    save_model(old, tmp_path / "old.safetensors")
    save_model(new, tmp_path / "new.safetensors")
    return tmp_path, old.state_dict(), new.state_dict()


def test_interpolation_with_a_rule_is_streamed_into_a_loadable_model(checkpoints):
    folder, old, new = checkpoints
    out = folder / "merged"
    result = runner.invoke(
        app,
        [
            "interpolate",
            str(folder / "old.safetensors"),
            str(folder / "new.safetensors"),
            "--out",
            str(out),
            "--old-weight",
            "0.25",
            "--rule",
            "head.*=1",
        ],
    )
    assert result.exit_code == 0, result.output
    merged = load_file(str(out / "model.safetensors"))
    for name, value in merged.items():
        alpha = 1.0 if name.startswith("head.") else 0.25
        torch.testing.assert_close(value, alpha * old[name] + (1 - alpha) * new[name])
    model = load_model(out / "model.safetensors")
    assert isinstance(model, MLP)  # the old file's architecture record travels along


def test_the_dev_search_writes_the_curve_and_follows_its_rule(checkpoints):
    folder, _, _ = checkpoints
    out = folder / "chosen"
    result = runner.invoke(
        app,
        [
            "interpolate",
            str(folder / "old.safetensors"),
            str(folder / "new.safetensors"),
            "--out",
            str(out),
            "--select",
            "--dev",
            "digits",
            "--selection-rule",
            "min-nfr-within:0.05",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Dev curve" in result.output and "chosen" in result.output
    selection = json.loads((out / "selection.json").read_text())
    assert selection["rule"] == "min-nfr-within:0.05" and len(selection["curve"]) == 11
    curve = selection["curve"]
    floor = curve[0]["accuracy"] - 0.05
    allowed = [p for p in curve if p["accuracy"] >= floor - 1e-12]
    best = min(allowed, key=lambda p: (p["negative_flip_rate"], -p["accuracy"], p["old_weight"]))
    assert selection["chosen"] == best["old_weight"]
    assert str(WeightRule.parse("min-nfr-within:0.05")) == selection["rule"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "give --old-weight"),
        (["--old-weight", "1.5"], "Invalid value for '--old-weight'"),  # the option, by name
        (["--old-weight", "0.5", "--rule", "=0.1"], "PATTERN"),
        (["--old-weight", "0.5", "--new-class-rows", "head.bias"], "TENSOR=ROWS"),
        (["--select"], "--select needs --dev"),
        (["--select", "--dev", "digits", "--old-weight", "0.3"], "not both"),
    ],
)
def test_bad_options_are_explained(checkpoints, options, message):
    folder, _, _ = checkpoints
    result = runner.invoke(
        app,
        [
            "interpolate",
            str(folder / "old.safetensors"),
            str(folder / "new.safetensors"),
            "--out",
            str(folder / "x"),
            *options,
        ],
    )
    assert result.exit_code == 2 and message in result.output, result.output
