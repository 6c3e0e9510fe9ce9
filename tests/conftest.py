"""Shared fixtures: one tiny simulated cohort and its prepared study, built once per session.

Tests that write into the study (embed, fit, ...) must copy it first (``study_copy``) so that
tests stay independent of order.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Two cores shared by everything: keep BLAS/torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")

TINY = {"individuals": 60, "genes": 4, "window": 2000, "seed": 1}


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A simulated cohort directory (60 people x 4 genes; 2 kb of variation around each TSS)."""
    from hapexpr.simulate import simulate_cohort

    out = tmp_path_factory.mktemp("cohort") / "c"
    simulate_cohort(out, **TINY)
    return out


def prepare_args(cohort: Path, out: Path, **extra) -> dict:
    return dict(
        vcf=cohort / "genotypes.vcf.gz",
        fasta=cohort / "reference.fa",
        genes=cohort / "genes.gtf",
        expression=cohort / "expression.bed.gz",
        covariates=cohort / "covariates.tsv",
        out=out,
        window=2000,
        folds=5,
        seed=0,
        progress=False,
        **extra,
    )


@pytest.fixture(scope="session")
def tiny_study(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort prepared with a 2,000 bp window and 5 folds. Read-only: copy to write."""
    from hapexpr.prepare import prepare_study

    out = tmp_path_factory.mktemp("study") / "s"
    prepare_study(**prepare_args(tiny_cohort, out))
    return out


@pytest.fixture()
def study_copy(tiny_study, tmp_path) -> Path:
    """A private, writable copy of the tiny study."""
    dst = tmp_path / "study"
    shutil.copytree(tiny_study, dst)
    return dst


@pytest.fixture(scope="session")
def en_study(tiny_study, tmp_path_factory) -> Path:
    """The tiny study with a final elastic net fit on all individuals (read-only: copy to change)."""
    from hapexpr.final import fit_final

    dst = tmp_path_factory.mktemp("final-en") / "study"
    shutil.copytree(tiny_study, dst)
    fit_final(dst, "elastic-net", progress=False)
    return dst


@pytest.fixture(scope="session")
def embedded_tiny_study(tiny_study, tmp_path_factory) -> Path:
    """The tiny study embedded once with the tiny model (8 bins). Read-only: copy to write."""
    import torch

    from hapexpr.embed import run_embed

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("embedded") / "study"
    shutil.copytree(tiny_study, out)
    run_embed(out, bins=8, batch_size=8, progress=False)
    return out


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (training results do not depend on it; timing noise does)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
