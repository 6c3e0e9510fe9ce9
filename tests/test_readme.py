"""The README's quick start, run from top to bottom as a new user would type it.

Every `hapexpr` line of the "Quick start by hand" block runs as written, in a fresh folder,
except that `simulate` gets a smaller cohort (a few genes, fewer people) to keep the suite
short, and `examples/config.yaml` (copied beside it) gets its cohort simulated as its own
header comment says. The pip line is what `.ci/run` already did.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--individuals", "40", "--genes", "3"]


def quick_start() -> list[list[str]]:
    """The block's commands, continuation lines joined and comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start by hand\n\n```bash\n(.*?)```", text, flags=re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def test_readme_quick_start_runs_as_written(tmp_path):
    commands = quick_start()
    assert commands[0][:2] == ["pip", "install"] and all(c[0] == "hapexpr" for c in commands[1:])
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for argv in commands[1:]:
        if argv[1] == "simulate":
            argv = [*argv, *SMALL]
        if argv[1] == "run":
            config = tmp_path / argv[2]
            sim = ["hapexpr", "simulate", "--out", str(config.parent / "cohort"), *SMALL]
            subprocess.run(sim, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=600)
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{shlex.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    for out in ("s/metrics.tsv", "s/report/index.html", "pred.tsv", "effects.tsv", "weights.db"):
        assert (tmp_path / out).stat().st_size > 0, out
