"""`hapexpr demo` end to end on a small cohort, then `hapexpr run` on the config it wrote."""

import subprocess

import pandas as pd


def test_demo_runs_every_stage_and_its_config_reruns(tmp_path):
    r = subprocess.run(
        ["hapexpr", "demo", "--out", "d", "--individuals", "40", "--genes", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    study = tmp_path / "d" / "study"
    methods = set(pd.read_csv(study / "metrics.tsv", sep="\t")["method"])
    assert methods == {
        "elastic-net",
        "elastic-net-window",
        "ridge-probe",
        "nt-transformer",
        "enformer",
        "enformer-ridge",
        "stack",
    }
    assert "mean r" in r.stdout and "Tiny, randomly initialised models" in r.stderr
    assert (study / "report" / "index.html").stat().st_size > 50_000
    again = subprocess.run(
        ["hapexpr", "run", "d/config.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already prepared" in again.stderr + again.stdout
    assert again.stderr.count("nothing to do") == 7
