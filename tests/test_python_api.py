"""docs/python-api.md's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_documented_example_runs(tmp_path, capsys):
    code = re.search(r"## Example.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    exec(compile(code, str(DOC), "exec"), {"workdir": str(tmp_path), "__name__": "example"})  # noqa: S102
    out = capsys.readouterr().out
    assert "elastic-net" in out and "variants with a weight" in out
