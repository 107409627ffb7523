"""The ``[keras]`` extra: a clear error without it, and an install that keeps the torch pin."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def run_import(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_without_keras_the_error_names_the_extra():
    completed = run_import(
        "import sys\n"
        "sys.modules['keras'] = None  # as if Keras were not installed\n"
        "from flipless.errors import MissingExtraError\n"
        "try:\n"
        "    import flipless.keras\n"
        "except MissingExtraError as error:\n"
        "    print(error)\n"
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "pip install 'flipless[keras]'" in completed.stdout
    assert "KERAS_BACKEND" in completed.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="tensorflow is installed here"
)
def test_a_backend_that_cannot_start_is_named_with_the_fix():
    completed = run_import(
        "from flipless.errors import MissingExtraError\n"
        "try:\n"
        "    import flipless.keras\n"
        "except MissingExtraError as error:\n"
        "    print(error)\n",
        KERAS_BACKEND="tensorflow",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "cannot start its backend tensorflow" in completed.stdout
    assert "KERAS_BACKEND=torch" in completed.stdout


def closure(name: str, seen: dict[str, str] | None = None) -> dict[str, str]:
    """Every installed distribution ``name`` needs (without extras), with its version."""
    seen = {} if seen is None else seen
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return seen
    seen[key] = importlib.metadata.version(name)
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{name} needs {requirement}, but {requirement.name} {installed} is installed"
        )
        closure(requirement.name, seen)
    return seen


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="the [keras] extra is absent")
def test_the_keras_extra_installs_consistently_and_keeps_the_torch_pin():
    pin = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pin is not None
    assert importlib.metadata.version("torch").split("+")[0] == pin.group(1)
    extra = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'^keras = \["([^"]+)"\]', extra, re.MULTILINE)
    assert spec is not None, "pyproject.toml declares the [keras] extra"
    installed = closure("keras")
    assert Requirement(spec.group(1)).specifier.contains(installed["keras"])
    assert "torch" not in installed  # Keras's own requirements never move torch
