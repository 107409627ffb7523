"""Import an object named by a ``"package.module:attribute"`` string.

Configs name a user's own code this way (``[data] target``, ``[model] target``): the part
before the colon is an importable module, the part after it an attribute of that module,
with dots for nested attributes (``"my_pkg.data:Loaders.train"``).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from flipless.errors import InputError

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*$")


def resolve_target(target: str, *, key: str = "target") -> Any:
    """The object that ``target`` (``"package.module:attribute"``) names.

    ``key`` is the config key or option the string came from; every error names it.
    Raises `InputError` when the string is not of that form, when the module cannot be
    imported (with the import's own message) or when it has no such attribute (listing
    the public names it does have).
    """
    if not isinstance(target, str) or not _TARGET.match(target.strip()):
        raise InputError(
            f"{key} must be 'package.module:attribute' (for example 'my_project.data:load'), "
            f"got {target!r}; write the module's dotted import path, a colon, then the name "
            "of the function or class in it"
        )
    module_name, attribute_path = target.strip().split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a user's module may fail in any way on import
        raise InputError(
            f"{key} {target!r}: module {module_name!r} cannot be imported "
            f"({type(error).__name__}: {error}); make it "
            "importable from the directory you run flipless in (add its folder to PYTHONPATH "
            "/ sys.path) or install its package (`pip install -e .` in its project)"
        ) from error
    resolved: Any = module
    walked = module_name
    for name in attribute_path.split("."):
        if not hasattr(resolved, name):
            available = sorted(n for n in dir(resolved) if not n.startswith("_"))
            shown = ", ".join(available[:20]) + (", …" if len(available) > 20 else "")
            raise InputError(
                f"{key} {target!r}: {walked!r} has no attribute {name!r}; it has: "
                f"{shown or '(no public names)'}; check the spelling after the colon"
            )
        resolved = getattr(resolved, name)
        walked = f"{walked}.{name}"
    return resolved
