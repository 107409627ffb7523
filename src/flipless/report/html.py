"""Assemble the self-contained HTML file: inline CSS and JS, the data as embedded JSON.

The file loads nothing: its stylesheet and script are inlined from the package's
``report/assets`` folder, its images are ``data:`` URIs, and a Content-Security-Policy allows
only the inlined script and style (by their SHA-256 hashes) and ``data:`` images, so even a
bug that let markup through could neither run a script nor reach the network.

Data travels in ``<script type="application/json">`` elements (never executed), with ``<``,
``>``, ``&``, U+2028 and U+2029 written as ``\\u`` escapes so that no string can close the
element; the page reads them with ``JSON.parse`` and shows user strings as text only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.errors import FliplessError, InputError
from flipless.report.payload import Payload

ROOT_ID = "flipless-report"
PAYLOAD_ID = "flipless-payload"
COMPARISON_ID = "flipless-comparison-"
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def asset(name: str) -> str:
    """The text of ``flipless/report/assets/<name>`` (package data)."""
    return resources.files("flipless.report").joinpath("assets", name).read_text("utf-8")


def script_json(value: Any) -> str:
    """JSON safe to place inside a ``<script type="application/json">`` element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in _JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _boot_script() -> str:
    """The report's script (assets/report.js) and the call that renders the embedded data."""
    code = asset("report.js")
    if "</script" in code.lower():  # the inlined script must not end its own element
        raise FliplessError("assets/report.js contains '</script'; it cannot be inlined.")
    return (
        "\n(function () {\n'use strict';\n"
        + code
        + "\nconst read = (id) => JSON.parse(document.getElementById(id).textContent);\n"
        + f"render(document.getElementById({json.dumps(ROOT_ID)}), read({json.dumps(PAYLOAD_ID)}), "
        + f"{{ comparison: (i) => read({json.dumps(COMPARISON_ID)} + i) }});\n"
        + "})();\n"
    )


def render_html(payload: Payload) -> str:
    """The whole HTML document for ``payload``."""
    style = "\n" + asset("report.css")
    script = _boot_script()
    policy = (
        f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    data = [
        f'<script type="application/json" id="{PAYLOAD_ID}">{script_json(payload.main)}</script>'
    ]
    data += [
        f'<script type="application/json" id="{COMPARISON_ID}{i}">{script_json(doc)}</script>'
        for i, doc in enumerate(payload.comparisons)
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(payload.main['title'])}</title>",
            '<link rel="icon" href="data:,">',
            f"<style>{style}</style>",
            "</head>",
            "<body>",
            f'<div id="{ROOT_ID}" class="flipless-report"></div>',
            *data,
            f"<script>{script}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def write_html(payload: Payload, out: str | os.PathLike[str]) -> str | Path:
    """Write the report atomically; return its path (a URL such as ``s3://…`` stays one).

    The text goes to a temporary file, renamed over ``out`` (or uploaded once complete; see
    :mod:`flipless.remote`).
    """
    target = remote.as_path(out)
    if remote.is_dir(target):
        raise InputError(f"{target} is a folder; expected the path of the HTML file to write.")
    if isinstance(target, Path) and not target.parent.is_dir():
        raise InputError(
            f"The folder {target.parent} does not exist; create it or choose another --out."
        )
    text = render_html(payload)
    try:
        with remote.atomic_local_file(target) as temporary:
            temporary.write_text(text, encoding="utf-8")  # published readable by all (0o644)
    except OSError as error:
        raise FliplessError(f"Could not write {target}: {error.strerror or error}.") from error
    return target
