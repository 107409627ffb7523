"""Run many ``flipless`` command lines in one process, as the installed command runs them.

``python driver.py CASES.json RESULTS.json``: CASES is a list of ``{"id", "args", "cwd"}``;
each case runs the Typer application (``flipless.cli.app``, what the ``flipless`` script
calls) in its folder with standard output and error captured, and RESULTS maps each id to
``{"code", "stdout", "stderr"}``. An exception that escapes the application is written to the
case's stderr as a traceback (which the tests then reject). Starting Python and importing
flipless once for dozens of cases keeps the bad-input suite fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def run_case(app, args: list[str], cwd: str) -> dict[str, object]:
    from flipless import terminal

    stdout, stderr = io.StringIO(), io.StringIO()
    code: object = 0
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                app(args, prog_name="flipless")
            except SystemExit as done:
                code = done.code if done.code is not None else 0
            except BaseException:
                traceback.print_exc()
                code = "exception"
    finally:
        os.chdir(before)
        terminal.set_quiet(False)
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def main(cases_path: str, results_path: str) -> None:
    from flipless.cli import app

    with open(cases_path, encoding="utf-8") as handle:
        cases = json.load(handle)
    results = {case["id"]: run_case(app, case["args"], case["cwd"]) for case in cases}
    with open(results_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
