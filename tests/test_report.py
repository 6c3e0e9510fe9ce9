"""``hapexpr report``: a self-contained HTML page that renders in headless Chromium.

Predictions are synthetic (no model is run): every sample of every gene once per method, with
the methods' skill set by the noise added to the observed values.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hapexpr.errors import StudyError
from hapexpr.report import TINY_WARNING, write_report
from hapexpr.study import Study

CHROMIUM = Path("/usr/bin/chromium")
HEADINGS = [
    "summary",
    "comparisons",
    "method-vs-method",
    "distributions",
    "best-genes",
    "ceiling",
    "explain",
    "per-gene",
    "provenance",
]


def write_predictions(study_path: Path, noise: dict[str, float], seed: int = 0) -> pd.DataFrame:
    study = Study.open(study_path)
    rng = np.random.default_rng(seed)
    parts = []
    for gene_id in study.gene_ids:
        obs = rng.normal(size=len(study.sample_ids))
        for method, sd in noise.items():
            parts.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "gene_id": gene_id,
                        "sample_id": study.sample_ids,
                        "fold": study.folds,
                        "observed": obs,
                        "predicted": obs + sd * rng.normal(size=len(obs)),
                    }
                )
            )
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(study_path / "predictions.tsv", sep="\t", index=False)
    return df


def write_tiny_store(study_path: Path) -> None:
    """An embeddings/<fp>/info.json as ``hapexpr embed --model tiny`` writes it (fields used here)."""
    d = study_path / "embeddings" / "0123456789abcdef"
    d.mkdir(parents=True)
    (d / "info.json").write_text(
        json.dumps(
            {
                "fingerprint": "0123456789abcdef",
                "model": "tiny",
                "tiny": True,
                "layer": 2,
                "bins": 32,
                "dim": 64,
                "weights_sha256": "ab" * 32,
                "tokenizer": "nt-6mer",
                "updated_unix": time.time(),
            }
        )
    )


def write_effects(study_path: Path, method: str = "nt-transformer") -> str:
    study = Study.open(study_path)
    gene_id = study.gene_ids[0]
    v = study.gene(gene_id).variants
    rng = np.random.default_rng(3)
    eff = pd.DataFrame(
        {
            "gene_id": gene_id,
            "variant_id": v["variant_id"],
            "pos": v["pos"],
            "ref": v["ref"],
            "alt": v["alt"],
            "in_window": v["in_window"],
            "n_carriers": rng.integers(1, 50, len(v)),
            "mean_effect": rng.normal(scale=0.1, size=len(v)),
            "sd_effect": rng.uniform(0, 0.05, len(v)),
        }
    )
    (study_path / "explain" / method).mkdir(parents=True)
    eff.to_csv(study_path / "explain" / method / f"{gene_id}.tsv", sep="\t", index=False)
    return gene_id


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture()
def full_report(study_copy) -> tuple[Path, Path, pd.DataFrame]:
    preds = write_predictions(study_copy, {"nt-transformer": 0.8, "elastic-net": 1.2, "ridge-probe": 3.0})
    write_tiny_store(study_copy)
    write_effects(study_copy)
    return study_copy, write_report(study_copy), preds


def test_report_content_is_self_contained(full_report):
    study, out, preds = full_report
    assert out == study / "report" / "index.html"
    page = out.read_text()
    for sid in HEADINGS:
        assert re.search(rf'<h2 id="{sid}">', page), sid
    # nothing external: no web addresses, stylesheets, scripts or fonts fetched from anywhere
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(link|script|iframe)\b", page, re.I)
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', page))
    # every embedded figure is a real, non-blank PNG
    from PIL import Image

    pngs = _pngs(page)
    assert len(pngs) >= 6  # nt vs EN, other pairs, distributions, best genes, ceiling, explain
    for png in pngs:
        img = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 5
    # the tiny-model banner, above the first section
    assert TINY_WARNING in page and page.index("tiny-model-banner") < page.index('<h2 id="summary">')
    # the summary's mean r agrees with scipy on the same predictions (NaN never occurs here)
    nt = preds[preds.method == "nt-transformer"]
    mean_r = np.mean([stats.pearsonr(d.observed, d.predicted).statistic for _, d in nt.groupby("gene_id")])
    summary = page[page.index('id="summary"') : page.index('id="comparisons"')]
    assert f"<td>{mean_r:.3f}</td>" in summary
    # nt-transformer vs elastic-net is the first figure of its section, and the first comparison
    scatter = page[page.index('id="method-vs-method"') : page.index('id="distributions"')]
    alts = re.findall(r'<img alt="([^"]*)"', scatter)
    assert alts[0] == "per-gene r, nt-transformer against elastic-net"
    assert "ridge-probe vs elastic-net" in alts[1] and "ridge-probe vs nt-transformer" in alts[1]
    comp = page[page.index('id="comparisons"') : page.index('id="method-vs-method"')]
    first_row = re.search(r"<tbody><tr[^>]*>(.*?)</tr>", comp).group(1)
    assert "elastic-net" in first_row and "nt-transformer" in first_row
    # provenance: input hashes, parameters and the store's fingerprint
    meta = Study.open(study).meta
    prov = page[page.index('id="provenance"') :]
    assert meta["inputs"]["vcf"]["sha256"][:12] in prov and "0123456789abcdef" in prov
    assert "window" in prov and str(meta["params"]["window"]) in prov
    # evaluate was run because metrics.tsv was missing
    assert (study / "metrics.tsv").exists()
    # gene names (the simulated GTF's SIMG<n>) beside the ids in the per-gene table
    names = Study.open(study).gene_names
    per_gene = page[page.index('id="per-gene"') : page.index('id="provenance"')]
    assert '<th class="l">gene_name</th>' in per_gene
    for gid, name in names.items():
        assert re.search(rf"<td class=\"l\">{re.escape(gid)}</td><td class=\"l\">{re.escape(name)}</td>", per_gene)


def test_refuses_to_overwrite_without_flag(full_report):
    study, out, _ = full_report
    before = out.read_bytes()
    with pytest.raises(StudyError, match="overwrite"):
        write_report(study)
    assert out.read_bytes() == before
    assert write_report(study, overwrite=True) == out
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]  # no temporary left behind


def test_single_method_without_tiny_model_or_effects(study_copy):
    write_predictions(study_copy, {"elastic-net": 1.0})
    page = write_report(study_copy).read_text()
    assert TINY_WARNING not in page and "tiny-model-banner" not in page
    assert "Only one method" in page and "hapexpr explain" in page
    assert len(_pngs(page)) == 4  # distributions, best genes, ceiling, r against estimated h2_cis


def test_study_without_predictions_says_what_to_run(study_copy):
    with pytest.raises(StudyError, match="hapexpr fit"):
        write_report(study_copy)
    assert not (study_copy / "report").exists()


def test_stale_metrics_are_recomputed(study_copy):
    from hapexpr.evaluate import evaluate_study

    write_predictions(study_copy, {"elastic-net": 1.0, "nt-transformer": 1.0}, seed=0)
    evaluate_study(study_copy)
    time.sleep(0.01)
    write_predictions(study_copy, {"elastic-net": 1.0, "nt-transformer": 1.0, "stack": 0.5}, seed=1)
    os.utime(study_copy / "predictions.tsv")  # strictly newer than metrics.tsv even on coarse clocks
    write_report(study_copy)
    metrics = pd.read_csv(study_copy / "metrics.tsv", sep="\t")
    assert "stack" in set(metrics["method"])


def test_cli_prints_path_and_keeps_existing(study_copy):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    write_predictions(study_copy, {"elastic-net": 1.0, "nt-transformer": 0.7})
    runner = CliRunner()
    first = runner.invoke(app, ["report", str(study_copy)])
    assert first.exit_code == 0, first.output
    assert str(study_copy / "report" / "index.html") in first.output.replace("\n", "")
    again = runner.invoke(app, ["report", str(study_copy)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, ["report", str(study_copy), "--overwrite"]).exit_code == 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) is not installed")
def test_renders_in_headless_chromium(full_report, tmp_path):
    _, out, _ = full_report
    url = out.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid in HEADINGS:
        assert re.search(rf'<h2 id="{sid}">', dom.stdout), sid
    assert len(re.findall(r"<img\b[^>]*src=\"data:image/png;base64,", dom.stdout)) >= 6
    assert TINY_WARNING in dom.stdout
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    if os.environ.get("HAPEXPR_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["HAPEXPR_KEEP_SCREENSHOT"])
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1280)
    assert shot.stat().st_size > 50_000
    # not blank: many distinct colours, and the banner's amber is on screen
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    amber = (img[..., 0] > 240) & (img[..., 1] > 230) & (img[..., 1] < 250) & (img[..., 2] > 190) & (img[..., 2] < 215)
    assert amber.sum() > 5000


def test_genes_are_labelled_with_their_names_where_they_have_one(study_copy):
    from hapexpr.report import gene_labels, with_gene_names

    study = Study.open(study_copy)
    labels = gene_labels(study)
    assert all(labels[g] == f"{g} ({n})" for g, n in study.gene_names.items())
    table = with_gene_names(
        pd.DataFrame({"method": "m", "gene_id": [study.gene_ids[0], "ELSEWHERE"]}), study.gene_names
    )
    assert list(table.columns) == ["method", "gene_id", "gene_name"]
    assert list(table["gene_name"]) == [study.gene_names[study.gene_ids[0]], "ELSEWHERE"]
    (study_copy / "genes.tsv").write_text(
        pd.read_csv(study_copy / "genes.tsv", sep="\t", dtype=str)
        .drop(columns="gene_name")
        .to_csv(sep="\t", index=False)
    )
    assert gene_labels(Study.open(study_copy)) == {g: g for g in study.gene_ids}  # an old study: no names


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) is not installed")
def test_report_fits_a_1300_px_window_and_defines_every_summary_column(study_copy, tmp_path):
    """A first-time reader sees the summary without scrolling sideways, and every column of the
    summary tables is defined in the caption under its table."""
    names = ["elastic-net", "elastic-net-window", "ridge-probe", "ridge-probe-kmer", "nt-transformer"]
    names += ["nt-transformer-kmer", "enformer-ridge", "stack"]
    write_predictions(study_copy, {n: 0.8 + 0.3 * i for i, n in enumerate(names)})
    write_tiny_store(study_copy)
    page = write_report(study_copy).read_text()
    summary = page[page.index('<h2 id="summary">') : page.index('<h2 id="comparisons">')]
    tables = re.findall(r"<table>(.*?)</table>\s*<dl class=\"defs\">(.*?)</dl>", summary, flags=re.S)
    assert len(tables) == 2  # the headline columns, then the others
    for table, defs in tables:
        headers = [html_unescape(h) for h in re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table)]
        defined = [html_unescape(d) for d in re.findall(r"<dt>(.*?)</dt>", defs)]
        assert headers == defined and all(re.findall(r"<dd>(.+?)</dd>", defs))
    assert "undefined" not in summary
    probe = tmp_path / "probe.html"
    width = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    probe.write_text(page.replace("</body>", f"<script>document.body.dataset.overflow = {width};</script></body>"))
    dom = _chromium(tmp_path, "--window-size=1300,900", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert int(re.search(r'data-overflow="(-?\d+)"', dom.stdout).group(1)) <= 0


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
