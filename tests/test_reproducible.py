"""Reproducible: same inputs, seed and options -> byte-identical outputs on CPU, whatever the
number of threads.

The whole chain (prepare, fit elastic-net, embed with the tiny model, fit ridge-probe, evaluate)
runs twice as separate ``hapexpr`` processes, once with one thread and once with two (BLAS,
OpenMP and torch all follow ``OMP_NUM_THREADS``), and the two studies are compared byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from conftest import prepare_args


def _chain(cohort: Path, study: Path, threads: int) -> subprocess.CompletedProcess:
    a = prepare_args(cohort, study)
    hx = [sys.executable, "-m", "hapexpr.cli"]
    steps = [
        [
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
            3,
            "--out",
            study,
        ],
        ["fit", study, "--method", "elastic-net", "--seed", 7],
        ["embed", study, "--bins", 8, "--batch-size", 4],
        ["fit", study, "--method", "ridge-probe", "--seed", 7],
        ["evaluate", study],
    ]
    script = " && ".join(" ".join(f"'{x}'" for x in hx + list(map(str, step))) for step in steps)
    n = str(threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "COLUMNS": "200",
    }  # torch takes its intra-op thread count from OMP_NUM_THREADS
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=600)


def test_same_seed_same_bytes_whatever_the_thread_count(tiny_cohort, tmp_path):
    studies = {t: tmp_path / f"threads{t}" for t in (1, 2)}
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(studies, pool.map(lambda t: _chain(tiny_cohort, studies[t], t), studies)))
    for t, run in runs.items():
        assert run.returncode == 0, f"threads={t}:\n{run.stderr}"
    one, two = studies[1], studies[2]

    for name in ["metrics.tsv", "predictions.tsv", "comparisons.tsv", "samples.tsv", "genes.tsv", "expression.tsv"]:
        assert (one / name).read_bytes() == (two / name).read_bytes(), f"{name} depends on the thread count"
    predictions = (one / "predictions.tsv").read_text().splitlines()
    assert {line.split("\t")[0] for line in predictions[1:]} == {"elastic-net", "ridge-probe"}
    for name in ["elastic-net", "ridge-probe"]:
        a, b = (json.loads((s / "models" / name / "fit.json").read_text()) for s in (one, two))
        assert a["key"] == b["key"] and a["options"] == b["options"] and a["complete"] and a["options"]["seed"] == 7
    for gene_file in (one / "genes").iterdir():
        with np.load(gene_file) as za, np.load(two / "genes" / gene_file.name) as zb:
            for key in za.files:
                np.testing.assert_array_equal(za[key], zb[key])


def test_study_json_records_what_reproduces_the_study(tiny_study, tiny_cohort):
    """study.json names every input by path, size and sha256, and every parameter of prepare."""
    import hashlib

    meta = json.loads((tiny_study / "study.json").read_text())
    assert {"format_version", "hapexpr_version", "params", "inputs", "n_samples", "n_genes"} <= set(meta)
    assert {"window", "folds", "seed", "residualised", "allow_unphased", "covariates"} <= set(meta["params"])
    for key, path in [
        ("vcf", "genotypes.vcf.gz"),
        ("fasta", "reference.fa"),
        ("genes", "genes.gtf"),
        ("expression", "expression.bed.gz"),
        ("covariates", "covariates.tsv"),
    ]:
        record = meta["inputs"][key]
        data = (tiny_cohort / path).read_bytes()
        assert record["path"] == str((tiny_cohort / path).resolve())
        assert record["size"] == len(data) and record["sha256"] == hashlib.sha256(data).hexdigest()
