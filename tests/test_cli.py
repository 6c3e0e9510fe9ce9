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
