"""Tests that need a system package skip where it is missing, naming the package and its
install command; FLIPLESS_REQUIRE_SYSTEM_PACKAGES=1 (set by .ci/run) makes them fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
REQUIRE = "FLIPLESS_REQUIRE_SYSTEM_PACKAGES"
NEEDS = """import pytest


@pytest.mark.browser
def test_needs_chromium():
    pass


@pytest.mark.system_package("dataset-fashion-mnist")
def test_needs_fashion_mnist():
    pass
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A test folder with this conftest, its packages' files pointed at paths that are absent."""
    text = CONFTEST.read_text()
    for path in ("/usr/bin/chromium", "/usr/share/datasets/fashion-mnist"):
        assert path in text
        text = text.replace(f'Path("{path}")', f'Path("{tmp_path}/absent{path}")')
    (tmp_path / "conftest.py").write_text(text)
    (tmp_path / "test_needs.py").write_text(NEEDS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    browser: drives Chromium\n")
    return tmp_path


def pytest_in(folder: Path, require: bool) -> subprocess.CompletedProcess[str]:
    """pytest on ``folder``, with FLIPLESS_REQUIRE_SYSTEM_PACKAGES=1 or without it."""
    environment = {key: value for key, value in os.environ.items() if key != REQUIRE}
    if require:
        environment[REQUIRE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env=environment,
    )


def test_a_missing_package_skips_with_its_install_command(project):
    result = pytest_in(project, require=False)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout
    for name in ("chromium", "dataset-fashion-mnist"):
        assert f"needs the Debian package {name}" in result.stdout
        assert f"sudo apt-get install {name}" in result.stdout


def test_ci_turns_the_skips_into_failures(project):
    result = pytest_in(project, require=True)
    assert result.returncode == 1, result.stdout
    assert "2 errors" in result.stdout
    assert f"{REQUIRE}=1 requires it" in result.stdout
