"""The command line as a first-time user meets it."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from hapexpr.cli import PIPELINE_ORDER, app


def test_help_lists_every_command_in_pipeline_order():
    res = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    listed = re.findall(r"^│ ([a-z][a-z-]+) ", res.output, flags=re.M)
    assert listed == list(PIPELINE_ORDER)


def test_flags_are_shown_without_a_value_type():
    """`--version <bool>` read as if the flag took a value (typer's rendering of bool options)."""
    import subprocess

    out = subprocess.run(["hapexpr", "--help"], capture_output=True, text=True, timeout=120, env=_wide()).stdout
    assert re.search(r"--version\s+Print the version", out), out
    out = subprocess.run(["hapexpr", "report", "--help"], capture_output=True, text=True, timeout=120, env=_wide())
    assert re.search(r"--overwrite\s+Replace an existing output", out.stdout), out.stdout


def _wide() -> dict:
    import os

    return {**os.environ, "COLUMNS": "120"}
