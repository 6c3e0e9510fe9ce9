"""Crashes lose nothing, two commands never share a study, and nothing is overwritten silently.

A real ``hapexpr`` process is killed with SIGKILL at a random-ish point (after its first gene
file is committed), then the same command is run again: it must finish, resume the committed
work, and produce exactly what an uninterrupted run produces. To make sure the kill lands mid-run
on any machine, the killed process is the CLI behind a tiny wrapper that sleeps before each gene
(``_SLOW``); the rerun is the plain ``hapexpr`` command. (embed's own SIGKILL test lives in
test_embed_study.py.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import prepare_args

from hapexpr.errors import StudyError
from hapexpr.io.atomic import study_lock
from hapexpr.study import Study

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "200"}

# Runs the real CLI with a pause before each gene, so that a kill lands between or inside genes.
_SLOW = """
import sys, time
import {module} as m
real = m.{function}
def slow(*a, **k):
    time.sleep({delay})
    return real(*a, **k)
m.{function} = slow
from hapexpr.cli import app
app(sys.argv[1:], prog_name="hapexpr")
"""


def hapexpr(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "hapexpr.cli", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def kill_after_first(args: list, *, module: str, function: str, watch, delay: float = 0.5) -> float:
    """Start ``hapexpr ARGS`` slowed down at ``module.function``, wait until ``watch()`` finds a
    committed file, then SIGKILL it after a random pause; returns the pause (for messages)."""
    code = _SLOW.format(module=module, function=function, delay=delay)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not watch():
        time.sleep(0.01)
    pause = random.uniform(0.0, 0.8 * delay)
    time.sleep(pause)
    finished = proc.poll() is not None
    if not finished:
        os.kill(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0].decode()
    assert not finished, f"the command ended before it could be killed (pause {pause:.2f} s):\n{out}"
    assert proc.returncode == -signal.SIGKILL
    return pause


def _prepare_cli_args(cohort: Path, out: Path) -> list:
    a = prepare_args(cohort, out)
    return [
        "prepare",
        "--vcf",
        a["vcf"],
        "--fasta",
        a["fasta"],
        "--genes",
        a["genes"],
        "--expression",
        a["expression"],
        "--covariates",
        a["covariates"],
        "--window",
        a["window"],
        "--folds",
        a["folds"],
        "--seed",
        a["seed"],
        "--out",
        out,
    ]


def assert_same_study(a: Path, b: Path) -> None:
    for name in ["samples.tsv", "genes.tsv", "expression.tsv", "covariates.tsv"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    meta_a, meta_b = (json.loads((p / "study.json").read_text()) for p in (a, b))
    meta_a.pop("created"), meta_b.pop("created")
    assert meta_a == meta_b
    assert sorted(p.name for p in (a / "genes").iterdir()) == sorted(p.name for p in (b / "genes").iterdir())
    for gene_file in (a / "genes").iterdir():
        with (
            np.load(gene_file, allow_pickle=False) as za,
            np.load(b / "genes" / gene_file.name, allow_pickle=False) as zb,
        ):
            assert sorted(za.files) == sorted(zb.files)
            for key in za.files:
                np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{gene_file.name}:{key}")


def test_prepare_killed_then_rerun_equals_uninterrupted(tiny_cohort, tiny_study, tmp_path):
    out = tmp_path / "s"
    partial = tmp_path / ".s.partial"
    args = _prepare_cli_args(tiny_cohort, out)
    pause = kill_after_first(
        args, module="hapexpr.prepare", function="build_gene", watch=lambda: any((partial / "genes").glob("*.npz"))
    )
    # the interrupted study is not mistaken for a complete one
    assert not out.exists()
    with pytest.raises(StudyError):
        Study.open(out)
    done = len(list((partial / "genes").glob("*.npz")))
    assert 1 <= done < 4, f"pause {pause:.2f} s"

    rerun = hapexpr(*args)
    assert f"resuming an interrupted prepare ({done} gene(s) already written)" in rerun.stderr
    assert not partial.exists()
    assert_same_study(out, tiny_study)  # tiny_study: the same options, never interrupted
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_fit_killed_then_rerun_equals_uninterrupted(tiny_study, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(tiny_study, killed)
    shutil.copytree(tiny_study, clean)
    oof = killed / "models" / "elastic-net" / "oof"
    args = ["fit", killed, "--method", "elastic-net"]
    pause = kill_after_first(
        args, module="hapexpr.crossval", function="cross_validate_gene", watch=lambda: any(oof.glob("*.tsv"))
    )
    done = sorted(p.name for p in oof.glob("*.tsv"))
    assert 1 <= len(done) < 4, f"pause {pause:.2f} s"
    # partial results are not presented as a fit
    assert not (killed / "predictions.tsv").exists()
    assert json.loads((killed / "models" / "elastic-net" / "fit.json").read_text())["complete"] is False
    ev = hapexpr("evaluate", killed, check=False)
    assert ev.returncode == 2 and "no predictions" in ev.stderr and not (killed / "metrics.tsv").exists()
    stamps = {name: (oof / name).stat().st_mtime_ns for name in done}

    rerun = hapexpr(*args)
    assert f"{len(done)} genes resumed" in rerun.stderr
    assert {name: (oof / name).stat().st_mtime_ns for name in done} == stamps, "committed genes were redone"
    hapexpr("fit", clean, "--method", "elastic-net")
    assert (killed / "predictions.tsv").read_bytes() == (clean / "predictions.tsv").read_bytes()
    for name in os.listdir(clean / "models" / "elastic-net" / "oof"):
        assert (oof / name).read_bytes() == (clean / "models" / "elastic-net" / "oof" / name).read_bytes()
    assert json.loads((killed / "models" / "elastic-net" / "fit.json").read_text())["complete"] is True


def test_second_command_on_a_locked_study_refuses(study_copy, tiny_cohort, tmp_path):
    with study_lock(study_copy, "fit --method test-holder"):
        r = hapexpr("fit", study_copy, "--method", "elastic-net", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{study_copy}: the study is in use by `hapexpr fit --method test-holder`" in r.stderr
    assert "wait for that command to finish" in r.stderr
    assert not (study_copy / "predictions.tsv").exists() and not (study_copy / "models" / "elastic-net").exists()

    # prepare locks the study it is building
    out = tmp_path / "s"
    with study_lock(tmp_path / ".s.partial", "prepare"):
        r = hapexpr(*_prepare_cli_args(tiny_cohort, out), check=False)
    assert r.returncode == 2 and "in use by `hapexpr prepare`" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_fit_with_other_options_is_not_overwritten_silently(study_copy):
    from hapexpr.fit import run_fit

    run_fit(study_copy, "elastic-net", options=dict(maf=0.01), progress=False)
    state = study_copy / "models" / "elastic-net" / "fit.json"
    before = (study_copy / "predictions.tsv").read_bytes(), state.read_bytes()

    r = hapexpr("fit", study_copy, "--method", "elastic-net", "--maf", "0.05", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "elastic-net was already fit on this study with other options" in r.stderr and "--overwrite" in r.stderr
    assert ((study_copy / "predictions.tsv").read_bytes(), state.read_bytes()) == before

    # the same options again: nothing to do, nothing rewritten
    run_fit(study_copy, "elastic-net", options=dict(maf=0.01), progress=False)
    assert (study_copy / "predictions.tsv").read_bytes() == before[0]

    run_fit(study_copy, "elastic-net", options=dict(maf=0.05), overwrite=True, progress=False)
    assert json.loads(state.read_text())["options"]["maf"] == 0.05


def test_simulate_keeps_an_existing_cohort(tiny_cohort, tmp_path):
    cohort = tmp_path / "c"
    shutil.copytree(tiny_cohort, cohort)
    before = {p.name: p.read_bytes() for p in cohort.iterdir()}
    r = hapexpr("simulate", "--out", cohort, "--individuals", 10, "--genes", 1, check=False)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in cohort.iterdir()} == before
