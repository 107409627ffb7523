"""``flipless interpolate`` when the new model knows more classes than the old one."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from flipless.cli import app
from flipless.models import MLP, load_model, save_model
from flipless.models.sources import start_from_old

runner = CliRunner()


def test_a_wider_head_names_new_class_rows_and_the_widened_merge_works(tmp_path):
    torch.manual_seed(0)
    old, new = MLP(8, 100, hidden=(4,)), MLP(8, 150, hidden=(4,))
    save_model(old, tmp_path / "old.safetensors")
    save_model(new, tmp_path / "new.safetensors")
    out = tmp_path / "merged"
    arguments = [
        "interpolate",
        str(tmp_path / "old.safetensors"),
        str(tmp_path / "new.safetensors"),
    ]
    failed = runner.invoke(app, [*arguments, "--old-weight", "0.5", "--out", str(out)])
    assert failed.exit_code == 2
    text = " ".join(failed.output.split())
    assert "--new-class-rows head.weight=100-149" in text
    assert "--new-class-rows head.bias=100-149" in text
    assert "Traceback" not in failed.output
    # widened to the new label space (rows 100-149 fresh), the merge copies those rows
    names = [str(k) for k in range(150)]
    widened = start_from_old(old, names, names[:100])
    save_model(widened, tmp_path / "widened.safetensors")
    rows = ["--new-class-rows", "head.weight=100-149", "--new-class-rows", "head.bias=100-149"]
    merged = runner.invoke(
        app,
        [
            "interpolate",
            str(tmp_path / "widened.safetensors"),
            str(tmp_path / "new.safetensors"),
            "--old-weight",
            "0.5",
            *rows,
            "--out",
            str(out),
        ],
    )
    assert merged.exit_code == 0, merged.output
    result = load_model(next(out.glob("*.safetensors")))
    torch.testing.assert_close(result.head.bias[100:], new.head.bias[100:], rtol=0, atol=0)
    mixed = 0.5 * widened.head.bias[:100] + 0.5 * new.head.bias[:100]
    torch.testing.assert_close(result.head.bias[:100], mixed, rtol=1e-6, atol=1e-7)


def test_new_class_rows_ranges_are_checked():
    failed = runner.invoke(
        app,
        [
            "interpolate",
            "a",
            "b",
            "--old-weight",
            "0.5",
            "--new-class-rows",
            "head.bias=9-3",
            "--out",
            "x",
        ],
    )
    assert failed.exit_code == 2
    assert "ranges FIRST-LAST" in " ".join(failed.output.split())
