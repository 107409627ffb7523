"""resolve_target: "package.module:attribute" strings to objects, with clear errors."""

from __future__ import annotations

import os.path
import sys

import pytest

from flipless.errors import InputError
from flipless.targets import resolve_target


def test_resolves_a_module_attribute():
    assert resolve_target("os.path:join") is os.path.join


def test_resolves_a_nested_attribute():
    assert resolve_target("flipless.errors:InputError.__mro__") == InputError.__mro__


def test_resolves_a_module_on_sys_path(tmp_path, monkeypatch):
    (tmp_path / "user_plugin_for_targets.py").write_text("def load():\n    return 41 + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_target("user_plugin_for_targets:load")() == 42
    sys.modules.pop("user_plugin_for_targets", None)


@pytest.mark.parametrize(
    "bad", ["os.path", "os.path:", ":join", "os path:join", "os.path:join:x", "1os:join", "", 3]
)
def test_bad_syntax_says_the_form(bad):
    with pytest.raises(InputError, match=r"'package\.module:attribute'"):
        resolve_target(bad)


def test_missing_module_names_it_and_the_fix():
    with pytest.raises(InputError) as caught:
        resolve_target("no_such_module_xyz.sub:load", key="data.target")
    message = str(caught.value)
    assert "data.target" in message
    assert "'no_such_module_xyz.sub'" in message
    assert "sys.path" in message and "pip install -e" in message


def test_missing_attribute_lists_what_is_there():
    with pytest.raises(InputError) as caught:
        resolve_target("flipless.errors:NoSuchError")
    message = str(caught.value)
    assert "'flipless.errors' has no attribute 'NoSuchError'" in message
    assert "InputError" in message and "MismatchError" in message


def test_a_module_whose_import_fails_inside_reports_the_inner_error(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_for_targets.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="no_such_dependency_xyz"):
        resolve_target("broken_plugin_for_targets:load")
    sys.modules.pop("broken_plugin_for_targets", None)


def test_a_module_that_raises_on_import_is_an_input_error(tmp_path, monkeypatch):
    (tmp_path / "raising_plugin_for_targets.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="RuntimeError: boom"):
        resolve_target("raising_plugin_for_targets:load")
    sys.modules.pop("raising_plugin_for_targets", None)
