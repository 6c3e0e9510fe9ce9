"""``hapexpr embed`` on a prepared study: dedup, the read API, resume after SIGKILL, Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hapexpr.embed import load_embedder, open_embeddings, run_embed  # noqa: E402
from hapexpr.embed.store import hashes_of  # noqa: E402
from hapexpr.errors import StudyError  # noqa: E402
from hapexpr.study import Study  # noqa: E402

OPTS = {"bins": 8, "batch_size": 4, "progress": False}


def store_arrays(study_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """gene_id -> (sha256, bins, mean) as stored, read with zarr directly."""
    import zarr

    store = open_embeddings(study_path)
    out = {}
    for p in sorted((store.root / "genes").glob("*.zarr")):
        g = zarr.open_group(str(p), mode="r")
        out[g.attrs["gene_id"]] = (g["sha256"][:], g["bins"][:], g["mean"][:])
    return out


@pytest.fixture(scope="module")
def embedded(tiny_study, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiny study embedded once with the local engine (shared by read-only tests)."""
    dst = tmp_path_factory.mktemp("embedded") / "study"
    shutil.copytree(tiny_study, dst)
    return dst, run_embed(dst, **OPTS)


def test_first_run_embeds_each_distinct_haplotype_once(embedded):
    path, summary = embedded
    study = Study.open(path)
    distinct: set[bytes] = set()
    needed = 0
    for gene_id in study.gene_ids:
        gene = study.gene(gene_id)
        distinct.update(gene.sequences)
        needed += gene.hap_index.size
    assert summary["needed"] == needed == len(study.gene_ids) * len(study.sample_ids) * 2
    assert summary["unique"] == len(distinct) < needed
    assert summary["cached"] == 0 and summary["computed"] == len(distinct)


def test_second_run_computes_nothing(embedded, tmp_path):
    path, _ = embedded
    work = tmp_path / "s"
    shutil.copytree(path, work)
    before = store_arrays(work)
    again = run_embed(work, **OPTS)
    assert again["computed"] == 0 and again["genes_written"] == 0
    assert again["cached"] == again["unique"]
    after = store_arrays(work)
    assert before.keys() == after.keys()
    for k in before:
        for x, y in zip(before[k], after[k], strict=True):
            np.testing.assert_array_equal(x, y)


def test_read_api_matches_an_independent_forward_pass(embedded):
    from hapexpr.embed.checkpoints import load_tiny
    from hapexpr.embed.engine import Embedder

    path, summary = embedded
    study = Study.open(path)
    store = open_embeddings(path)
    assert store.fingerprint == summary["fingerprint"]
    assert store.info["bins"] == 8 and store.info["dim"] == 64 and store.info["tiny"] is True
    assert store.info["window"] == study.window
    direct = Embedder(load_tiny(0), bins=8, window=study.window)
    for gene_id in study.gene_ids:
        gene = study.gene(gene_id)
        hb, hm = store.haplotype_bins(gene), store.haplotype_mean(gene)
        n = len(gene.sequences)
        assert hb.shape == (n, 8, 64) and hb.dtype == np.float32 and hm.shape == (n, 64)
        b, m = direct.compute(gene.sequences, batch_size=1)
        np.testing.assert_allclose(hb, b, atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(hm, m, atol=2e-3, rtol=2e-3)
        sb, sm = store.sample_bins(gene), store.sample_mean(gene)
        samples = len(study.sample_ids)
        assert sb.shape == (samples, 2, 8, 64) and sm.shape == (samples, 2, 64)
        s, h = 7, 1  # person 7's second haplotype
        row = gene.sequences.index(gene.sequence(s, h))
        np.testing.assert_array_equal(sb[s, h], hb[row])
        np.testing.assert_array_equal(sm[s, h], hm[row])


def test_load_embedder_reuses_the_store(embedded, tmp_path):
    path, _ = embedded
    work = tmp_path / "s"
    shutil.copytree(path, work)
    study = Study.open(work)
    gene = study.gene(study.gene_ids[0])
    embedder = load_embedder(work)
    calls = []
    real = embedder.compute
    embedder.compute = lambda s, **kw: (calls.append(len(s)), real(s, **kw))[1]
    b, m = embedder.embed(gene.sequences, tss_offset=gene.tss_offset)
    assert calls == []  # every haplotype of the gene is cached
    np.testing.assert_array_equal(b, open_embeddings(work).haplotype_bins(gene))
    swapped = bytearray(gene.sequences[0])
    swapped[gene.tss_offset] = ord("A" if swapped[gene.tss_offset] != ord("A") else "C")
    b2, _ = embedder.embed([bytes(swapped), gene.sequences[0]], tss_offset=gene.tss_offset)
    assert calls == [1]  # only the new sequence
    assert np.abs(b2[0] - b[0]).max() > 0
    np.testing.assert_array_equal(b2[1], b[0])


def test_missing_store_or_fingerprint_is_a_study_error(tiny_study, embedded):
    with pytest.raises(StudyError, match="hapexpr embed"):
        open_embeddings(tiny_study)
    with pytest.raises(StudyError, match="fingerprint"):
        open_embeddings(embedded[0], "ffffffff")
    assert open_embeddings(embedded[0], embedded[1]["fingerprint"][:6]).fingerprint == embedded[1]["fingerprint"]
    assert open_embeddings(embedded[0], "tiny").fingerprint == embedded[1]["fingerprint"]  # by --model


def test_cli_prints_dedup_and_final_lines(embedded, tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    work = tmp_path / "s"
    shutil.copytree(embedded[0], work)
    result = CliRunner().invoke(app, ["embed", str(work), "--bins", "8"])
    assert result.exit_code == 0, result.output
    assert "unique (dedup x" in result.output and "already cached" in result.output
    assert "computed 0" in result.output


def test_sigkill_then_rerun_finishes_without_redoing_committed_genes(tiny_study, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(tiny_study, killed)
    shutil.copytree(tiny_study, clean)
    env = {**os.environ, "_HAPEXPR_EMBED_BATCH_DELAY": "0.4", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hapexpr.cli", "embed", str(killed), "--bins", "8", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    committed: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        committed = [p for p in killed.glob("embeddings/*/genes/*.zarr") if not p.name.startswith(".")]
        if committed:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "embed finished before it could be killed: " + proc.stdout.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    n_genes = len(Study.open(killed).gene_ids)
    done = [p for p in killed.glob("embeddings/*/genes/*.zarr") if not p.name.startswith(".")]
    assert 1 <= len(done) < n_genes
    stamps = {p.name: (p / "zarr.json").stat().st_mtime_ns for p in done}
    done_rows = len(open_embeddings(killed).index.map)

    resumed = run_embed(killed, **OPTS)
    reference = run_embed(clean, **OPTS)
    assert resumed["cached"] == done_rows
    assert resumed["computed"] == reference["computed"] - done_rows
    assert resumed["genes_written"] == n_genes - len(done)
    for p in done:  # committed genes were not rewritten
        assert (p / "zarr.json").stat().st_mtime_ns == stamps[p.name]
    assert not list(killed.glob("embeddings/*/genes/.*"))  # no temporary leftovers
    a, b = store_arrays(killed), store_arrays(clean)
    assert a.keys() == b.keys() and len(a) == n_genes
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_allclose(a[k][1].astype(np.float32), b[k][1].astype(np.float32), atol=2e-3)
        np.testing.assert_allclose(a[k][2].astype(np.float32), b[k][2].astype(np.float32), atol=2e-3)


def test_ray_engine_gives_the_same_store_as_local(embedded, tiny_study, tmp_path):
    pytest.importorskip("ray")
    work = tmp_path / "ray"
    shutil.copytree(tiny_study, work)
    summary = run_embed(work, engine="ray", **OPTS)
    assert summary["computed"] == embedded[1]["computed"]
    assert summary["fingerprint"] == embedded[1]["fingerprint"]
    a, b = store_arrays(work), store_arrays(embedded[0])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_allclose(a[k][1].astype(np.float32), b[k][1].astype(np.float32), atol=2e-3)
        np.testing.assert_allclose(a[k][2].astype(np.float32), b[k][2].astype(np.float32), atol=2e-3)
    study = Study.open(work)
    gene = study.gene(study.gene_ids[-1])
    assert np.array_equal(a[gene.gene_id][0], hashes_of(gene.sequences))


def test_a_shared_cache_reuses_another_studys_embeddings(tiny_study, tmp_path):
    """Two studies of the same cohort embedding into one --cache folder: the second computes
    nothing, its features equal the first's, and each keeps its own gene groups."""
    import shutil

    from hapexpr.embed import open_embeddings, run_embed
    from hapexpr.study import Study

    a, b, cache = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
    shutil.copytree(tiny_study, a)
    shutil.copytree(tiny_study, b)
    first = run_embed(a, bins=4, cache=cache, progress=False)
    second = run_embed(b, bins=4, cache=cache, progress=False)
    assert first["computed"] == first["unique"] > 0
    assert second["computed"] == 0 and second["cached"] == second["unique"]
    assert (cache / first["fingerprint"] / "info.json").exists()
    assert len(list((cache / first["fingerprint"] / "studies").iterdir())) == 2
    sa, sb = open_embeddings(a), open_embeddings(b)
    study = Study.open(a)
    for g in study.gene_ids:
        np.testing.assert_array_equal(sa.sample_bins(study.gene(g)), sb.sample_bins(Study.open(b).gene(g)))
    # a rerun without --cache keeps using the shared store
    assert run_embed(a, bins=4, progress=False)["computed"] == 0
