"""``hapexpr report``: one self-contained HTML page of a study's results.

STUDY/report/index.html holds everything inline (CSS in a ``<style>`` element, figures as
base64 PNG ``data:`` URIs, no scripts, fonts or network references), so it can be mailed,
archived or opened offline. Contents and figures are described in ``docs/report.md``.

The report reads only the study directory: predictions.tsv, metrics.tsv (recomputed through
``hapexpr.evaluate`` when missing or older than the predictions), study.json, the fit state of
each method (models/<method>/fit.json), the model descriptions of the embedding stores and the
Enformer caches, and any variant effects under explain/<method>/<gene>.tsv.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr import __version__
from hapexpr import report_figures as rf
from hapexpr.crossval import read_predictions
from hapexpr.embed.store import layer_note
from hapexpr.errors import StudyError
from hapexpr.evaluate import compare, evaluate_study, genes_without_model, h2_strata, significant_pairs, summarise
from hapexpr.fit_records import fit_record
from hapexpr.io.atomic import atomic_open
from hapexpr.methods import registry
from hapexpr.study import Study

REPORT = Path("report") / "index.html"
TINY_WARNING = "numbers show the pipeline working, not what real weights achieve"
EXPLAIN_COLUMNS = ["gene_id", "variant_id", "pos", "ref", "alt", "in_window", "n_carriers", "mean_effect", "sd_effect"]
BEST_GENES = 4
MAX_OTHER_PAIRS = 12
MAX_EXPLAIN_FIGURES = 24


@dataclass
class Provenance:
    """What produced each method's numbers: its fit.json, and the model stores it used."""

    fits: dict[str, dict] = field(default_factory=dict)  # method -> fit.json (may be {})
    stores: list[dict] = field(default_factory=list)  # embeddings/*/info.json, newest first
    models: dict[str, list[str]] = field(default_factory=dict)  # method -> model descriptions
    tiny: dict[str, list[str]] = field(default_factory=dict)  # method -> tiny models it used
    rank: dict[str, tuple] = field(default_factory=dict)  # method -> sort key (registry order)
    reference: str | None = None  # the field's baseline (e.g. the elastic net), compared first
    primary: str | None = None  # the method listed first (the seed paper's model)


def write_report(study_path: str | Path, *, overwrite: bool = False) -> Path:
    """Write STUDY/report/index.html atomically and return its path.

    An existing report is kept (StudyError) unless ``overwrite``; metrics are recomputed first
    when STUDY/metrics.tsv is missing or older than STUDY/predictions.tsv.
    """
    study = Study.open(study_path)
    out = study.path / REPORT
    if out.exists() and not overwrite:
        raise StudyError("a report already exists", path=out, hint="pass --overwrite to replace it")
    metrics, summary, comparisons = _metrics(study)
    predictions = read_predictions(study.path)
    provenance = read_provenance(study, list(metrics["method"].unique()))
    metrics = metrics.sort_values("method", key=lambda c: c.map(provenance.rank), kind="stable")
    page = render(
        study,
        metrics=metrics,
        summary=summary,
        comparisons=comparisons,
        predictions=predictions,
        provenance=provenance,
        explain=read_explain(study),
    )
    with atomic_open(out) as fh:
        fh.write(page)
    return out


def _metrics(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    met, pred = study.path / "metrics.tsv", study.path / "predictions.tsv"
    if not met.exists() or (pred.exists() and pred.stat().st_mtime_ns > met.stat().st_mtime_ns):
        return evaluate_study(study.path)
    metrics = pd.read_csv(met, sep="\t", dtype={"method": str, "gene_id": str})
    if metrics.empty:
        raise StudyError("metrics.tsv has no rows", path=met, hint="run `hapexpr fit` and `hapexpr evaluate` first")
    no_model = genes_without_model(study, sorted(metrics["method"].unique()))
    return metrics, summarise(metrics, no_model=no_model), _with_significant(compare(metrics), read_per_gene(study))


# ---------------------------------------------------------------------------------------------
# Provenance


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_provenance(study: Study, methods: list[str]) -> Provenance:
    """Fit options and model stores of each method, and which of them used a tiny model."""
    prov = Provenance()
    for p in sorted((study.path / "embeddings").glob("*/info.json")):
        info = _read_json(p)
        if info is not None:
            prov.stores.append({"fingerprint": p.parent.name, **info})
    prov.stores.sort(key=lambda i: i.get("updated_unix", 0.0), reverse=True)
    for m in methods:
        try:
            record = fit_record(study, m)
        except StudyError:  # rows without a fit record (e.g. written by hand or by another tool)
            record = {}
        prov.fits[m] = record
        used = record.get("models_used")
        if used is None:  # no record of the models: any tiny model in the study may be behind it
            used = [
                {"description": _describe_store(s) + " (no fit record: assumed)", "tiny": True}
                for s in prov.stores
                if s.get("tiny")
            ]
        prov.models[m] = [u["description"] for u in used]
        prov.tiny[m] = [u["description"] for u in used if u.get("tiny")]
        if record.get("method") in registry.method_names():
            cls = registry.get(record["method"])
        else:  # a name the registry knows as some method's default (e.g. enformer-ridge)
            cls = (registry.from_default_name(m) or (None,))[0]
        prov.rank[m] = (cls.order if cls else 1000, m)
        if cls is not None and cls.reference and (prov.reference is None or prov.rank[m] < prov.rank[prov.reference]):
            prov.reference = m
    ordered = sorted(methods, key=lambda m: prov.rank[m])
    prov.primary = next((m for m in ordered if m != prov.reference), None)
    return prov


def _describe_store(store: dict) -> str:
    kind = "tiny randomly initialised model" if store.get("tiny") else str(store.get("model", "?"))
    return f"embeddings {store.get('fingerprint')} ({kind}{layer_note(store)})"


# ---------------------------------------------------------------------------------------------
# Variant effects (hapexpr explain)


def read_explain(study: Study) -> list[tuple[str, str, pd.DataFrame | str]]:
    """(method, gene_id, effects table or the reason it cannot be drawn) for every file under
    STUDY/explain/<method>/*.tsv, in method then study gene order."""
    root = study.path / "explain"
    out = []
    for method_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        for f in sorted(method_dir.glob("*.tsv")):
            try:
                df = pd.read_csv(f, sep="\t", dtype={"gene_id": str, "variant_id": str})
            except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                out.append((method_dir.name, f.stem, f"{f.name} could not be read ({exc})"))
                continue
            missing = [c for c in EXPLAIN_COLUMNS if c not in df.columns]
            if not missing:  # variants no haplotype carries have no effect to draw
                df = df.dropna(subset=["mean_effect"]).reset_index(drop=True)
            if missing or df.empty:
                why = f"missing columns {', '.join(missing)}" if missing else "no variant with an effect"
                out.append((method_dir.name, f.stem, f"{f.name}: {why}"))
                continue
            out.append((method_dir.name, str(df["gene_id"].iloc[0]), df))
    order = {g: i for i, g in enumerate(study.gene_ids)}
    return sorted(out, key=lambda t: (t[0], order.get(t[1], len(order)), t[1]))


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:0 20px 40px;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin:18px 0 4px}h2{border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:34px}
.banner{background:#fff3cd;border:2px solid #e0a800;border-radius:6px;padding:10px 14px;margin:14px 0;font-size:1.05em}
.banner strong{color:#8a5a00}.muted{color:#666}.note{background:#f4f6f8;border-left:4px solid #9aa;padding:6px 10px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em;max-width:100%}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
td{white-space:nowrap}td.l{white-space:normal;overflow-wrap:anywhere}
dl.defs{font-size:.85em;color:#444;max-width:1100px;display:grid;grid-template-columns:max-content 1fr;gap:1px 12px;margin:4px 0 10px}dl.defs dt{font-weight:600}dl.defs dd{margin:0}
th{background:#f0f2f4}td.l,th.l{text-align:left}tr.hl td{background:#eef5ff;font-weight:600}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;max-width:900px}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
nav a{margin-right:12px}details summary{cursor:pointer;margin:6px 0}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(v, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):d}"
    if isinstance(v, (float, np.floating)):
        return format(float(v), fmt)
    return _e(v)


_L = ' class="l"'


def _table(
    df: pd.DataFrame, *, labels: dict | None = None, fmts: dict | None = None, left: tuple = (), highlight=None
) -> str:
    labels, fmts = labels or {}, fmts or {}
    head = "".join(f"<th{_L if c in left else ''}>{_e(labels.get(c, c))}</th>" for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = "".join(
            f"<td{_L if c in left else ''}>{_num(v, fmts.get(c, '.3f'))}</td>" for c, v in zip(df.columns, row)
        )
        rows.append(f"<tr{' class=hl' if highlight is not None and highlight(i, row) else ''}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def _section(sid: str, title: str, body: str) -> str:
    return f'<section><h2 id="{sid}">{_e(title)}</h2>\n{body}\n</section>'


# Every column the summary tables can show: its header and what it means (the caption under
# each table defines exactly the columns it shows).
SUMMARY_COLUMNS = {
    "method": ("method", "the fit's name in predictions.tsv"),
    "genes": ("genes", "genes with out-of-fold predictions of this method"),
    "mean_r": ("mean r", "mean over genes of Pearson r between observed and out-of-fold predicted expression"),
    "median_r": ("median r", "median of the same per-gene r"),
    "genes_q05": ("genes q < 0.05", "genes whose r is above 0 at Benjamini-Hochberg q < 0.05 over this method's genes"),
    "ratio_to_ceiling": (
        "r / true ceiling",
        "mean r over mean sqrt(h2) of the simulated truth, on the genes with h2 > 0: the share of the "
        "reachable correlation this method reaches",
    ),
    "ratio_to_h2": (
        "r / estimated ceiling",
        "mean r over mean sqrt(h2) estimated (Haseman-Elston, inside the training folds) from the variants "
        "this method reads (column 'h2 of'), on genes with h2 >= 0.05",
    ),
    "mean_r_heritable": ("mean r (h2 > 0)", "mean r on the genes with a true h2 > 0"),
    "mean_ceiling_heritable": ("mean true ceiling", "mean sqrt(h2) of the simulated truth on those genes"),
    "genes_no_model": ("genes without a model", "genes this method made no model of in cross-validation"),
    "genes_constant": ("constant genes", "genes whose predictions do not vary (no r; counted as r = 0 in the means)"),
    "frac_r_below_0": ("share r < 0", "share of the genes with varying predictions where r < 0"),
    "null_mean_r": ("null r", "mean r of the null reference (a ridge on the window variants with permuted expression)"),
    "null_frac_r_below_0": ("null share r < 0", "the null reference's share of r < 0 on the same genes"),
    "h2_features_from": ("h2 of", "which variants the estimated h2 is of: the window (h2_cis) or +-1 Mb (h2_cis_wide)"),
    "mean_r_h2_stratum0": ("mean r, h2 < 0.05", "mean r over the genes with estimated h2 below 0.05"),
    "mean_r_h2_stratum1": ("mean r, h2 0.05-0.2", "mean r over the genes with estimated h2 from 0.05 to 0.2"),
    "mean_r_h2_stratum2": ("mean r, h2 > 0.2", "mean r over the genes with estimated h2 above 0.2"),
    "genes_h2_stratum0": ("genes h2 < 0.05", "genes in that stratum"),
    "genes_h2_stratum1": ("genes h2 0.05-0.2", "genes in that stratum"),
    "genes_h2_stratum2": ("genes h2 > 0.2", "genes in that stratum"),
}
HEADLINE_COLUMNS = ("method", "genes", "mean_r", "median_r", "genes_q05", "ratio_to_ceiling", "ratio_to_h2")
_SUMMARY_LABELS = {k: label for k, (label, _) in SUMMARY_COLUMNS.items()}


def _defined(df: pd.DataFrame) -> str:
    """A caption defining every column of ``df`` (a column without a definition is named so)."""
    items = "".join(
        f"<dt>{_e(SUMMARY_COLUMNS.get(c, (c, ''))[0])}</dt><dd>{_e(SUMMARY_COLUMNS.get(c, (c, 'undefined'))[1])}</dd>"
        for c in df.columns
    )
    return f'<dl class="defs">{items}</dl>'


def render(
    study: Study,
    *,
    metrics: pd.DataFrame,
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    predictions: pd.DataFrame,
    provenance: Provenance,
    explain: list,
) -> str:
    """The whole page as one string."""
    methods = rf.order_methods(metrics["method"].unique())
    summary = summary.set_index("method").loc[methods].reset_index()
    has_truth = "ceiling" in metrics.columns and metrics["ceiling"].notna().any()
    sections = [
        _summary_section(summary, comparisons, has_truth, provenance),
        _scatter_section(metrics, has_truth, provenance.reference),
        _section(
            "distributions",
            "Distribution of r per method",
            _figure(
                rf.distribution_figure(metrics),
                "box plot of per-gene r per method",
                "Per-gene Pearson r between observed and out-of-fold predicted expression across held-out "
                "individuals. Each dot is a gene; box = quartiles, line = median, diamond = mean.",
            ),
        ),
        _best_genes_section(metrics, summary, predictions, gene_labels(study)),
        _ceiling_section(metrics, has_truth),
        _statistics_section(
            metrics,
            read_per_gene(study),
            methods,
            {provenance.reference, provenance.primary},
            seed_spread(study, methods),
            study.gene_names,
        ),
        _explain_section(study, explain),
        _per_gene_section(study, metrics, methods, has_truth),
        _provenance_section(study, provenance, methods),
    ]
    n_samples = study.meta.get("n_samples", len(study.samples))
    nav = "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t in _NAV)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>hapexpr report: {_e(study.path.name)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>hapexpr report: {_e(study.path.name)}</h1>\n{_banner(provenance)}\n"
        f'<p class="muted">{len(metrics["gene_id"].unique())} genes, {n_samples} individuals, '
        f"{_e(split_note(study))}; methods: {_e(', '.join(methods))}. "
        f"Every number is computed on out-of-fold predictions (each individual predicted by a model "
        f"that never saw it). Written {_e(time.strftime('%Y-%m-%d %H:%M'))} by hapexpr {_e(__version__)}.</p>\n"
        f"<nav>{nav}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def split_note(study: Study) -> str:
    """How individuals were split into folds, in words (random, or by a sample annotation)."""
    params = study.params
    by = params.get("folds_by")
    if by:
        groups = by.get("groups") or []
        shown = ", ".join(str(g) for g in groups[:8]) + (" ..." if len(groups) > 8 else "")
        return (
            f"folds by {by.get('column')} from {Path(str(by.get('file'))).name} ({len(groups)} folds: {shown}; "
            "each group is predicted by models trained on the others)"
        )
    return f"{study.n_folds}-fold cross-validation over individuals (random folds, seed {params.get('seed', '?')})"


_NAV = [
    ("summary", "Summary"),
    ("comparisons", "Comparisons"),
    ("method-vs-method", "Method vs method"),
    ("distributions", "Distributions"),
    ("best-genes", "Best genes"),
    ("ceiling", "Ceiling"),
    ("statistics", "Intervals and heritability"),
    ("explain", "Variant effects"),
    ("per-gene", "Per gene"),
    ("provenance", "Provenance"),
]


def _banner(prov: Provenance) -> str:
    """The tiny-model warning, naming for each tiny model the methods that used it (a stack,
    through its bases, is listed under each of them)."""
    used_by: dict[str, list[str]] = {}
    for m, ds in prov.tiny.items():
        for d in ds:
            used_by.setdefault(d, []).append(m)
    if not used_by:
        return ""
    fixes = []
    if any(d.startswith("embeddings") for d in used_by):
        fixes.append("<code>hapexpr embed STUDY --model PATH</code>")
    if any(d.startswith("Enformer") for d in used_by):
        fixes.append("<code>hapexpr fit STUDY --method enformer --model PATH</code>")
    which = "".join(f"<li>{_e(d)}: used by <b>{_e(', '.join(ms))}</b></li>" for d, ms in used_by.items())
    return (
        f'<div class="banner" id="tiny-model-banner" role="alert"><strong>Tiny, randomly initialised model'
        f"{'s' if len(used_by) > 1 else ''}</strong> (each with the methods that used it):<ul>{which}</ul>"
        f"These {TINY_WARNING}. Rerun {' and '.join(fixes)} with a real checkpoint directory "
        "for meaningful numbers.</div>"
    )


def _summary_section(summary: pd.DataFrame, comparisons: pd.DataFrame, has_truth: bool, prov: Provenance) -> str:
    head = summary[[c for c in HEADLINE_COLUMNS if c in summary.columns]]
    rest = summary[["method", *[c for c in summary.columns if c not in HEADLINE_COLUMNS]]]
    body = _table(head, labels=_SUMMARY_LABELS, left=("method",)) + _defined(head)
    body += (
        '<p class="muted">r is computed per gene across held-out individuals on the pooled out-of-fold '
        "predictions; a constant prediction (e.g. an elastic net that kept no variant) counts as r = 0."
        + ("" if has_truth else " The truth is unknown (not a simulated cohort), so there is no true ceiling.")
        + "</p>"
    )
    if len(rest.columns) > 1:
        body += (
            f"<details><summary>More columns per method ({len(rest.columns) - 1})</summary>"
            + _table(rest, labels=_SUMMARY_LABELS, left=("method", "h2_features_from"))
            + _defined(rest)
            + "</details>"
        )
    comp = ""
    if comparisons.empty:
        comp = '<p class="note">Only one method: nothing to compare.</p>'
    else:
        key = comparisons.apply(lambda r: {r.method_a, r.method_b} == {prov.reference, prov.primary}, axis=1)
        comparisons = pd.concat([comparisons[key], comparisons[~key]], ignore_index=True)
        comp = _table(
            comparisons,
            labels={
                "a_wins": "genes won by a",
                "b_wins": "genes won by b",
                "mean_diff": "mean r(a) - r(b)",
                "wilcoxon_p": "Wilcoxon p",
                "n_genes": "genes in common",
                "wilcoxon_q": "BH q",
                "a_better_q05": "genes a better (q < 0.05)",
                "b_better_q05": "genes b better (q < 0.05)",
            },
            fmts={"mean_diff": "+.3f", "wilcoxon_p": ".3g", "wilcoxon_q": ".3g"},
            left=("method_a", "method_b"),
            highlight=lambda i, r: i == 0 and bool(key.any()),
        )
        comp += (
            '<p class="muted">Paired over the genes both methods predict: genes where each has the higher r, '
            "and the two-sided Wilcoxon signed-rank p-value of the per-gene differences.</p>"
        )
        comp += _comparison_note()
    return _section("summary", "Method summary", body) + "\n" + _section("comparisons", "Pairwise comparisons", comp)


def _scatter_section(metrics: pd.DataFrame, has_truth: bool, reference: str | None) -> str:
    pairs = rf.scatter_pairs(metrics, reference)
    if not pairs:
        return _section(
            "method-vs-method",
            "Per-gene r, method against method",
            '<p class="note">Only one method: fit another (e.g. <code>hapexpr fit STUDY --method '
            "elastic-net</code>) to compare per gene.</p>",
        )
    ceiling = metrics.groupby("gene_id")["ceiling"].first() if has_truth else None
    colour = " Points are coloured by the gene's ceiling sqrt(h2)." if has_truth else ""
    first, rest = pairs[0], pairs[1 : 1 + MAX_OTHER_PAIRS]
    body = _figure(
        rf.scatter_figure(metrics, [first], ceiling),
        f"per-gene r, {first[1]} against {first[0]}",
        f"Each point is a gene: r of <b>{_e(first[1])}</b> (y) against <b>{_e(first[0])}</b> (x). "
        f"Above the dashed diagonal {_e(first[1])} predicts the gene better.{colour}",
    )
    if rest:
        dropped = len(pairs) - 1 - len(rest)
        names = ", ".join(f"{y} vs {x}" for x, y in rest)
        body += _figure(
            rf.scatter_figure(metrics, rest, ceiling),
            f"per-gene r: {names}",
            f"The other pairs of methods ({_e(names)}), drawn the same way: the y method predicts "
            "the gene better above the diagonal."
            + (f" {dropped} further pairs are in the comparisons table only." if dropped > 0 else ""),
        )
    return _section("method-vs-method", "Per-gene r, method against method", body)


def _best_genes_section(metrics: pd.DataFrame, summary: pd.DataFrame, predictions: pd.DataFrame, labels: dict) -> str:
    title = "Observed vs predicted, best genes"
    best = summary.sort_values("mean_r", ascending=False, kind="stable")["method"].iloc[0]
    r = metrics[metrics["method"] == best].set_index("gene_id")["pearson_r"].dropna()
    genes = list(r.sort_values(ascending=False, kind="stable").index[:BEST_GENES])
    have = predictions[(predictions["method"] == best) & predictions["gene_id"].isin(genes)]
    if not genes or have.empty:
        return _section(
            "best-genes",
            title,
            '<p class="note">No out-of-fold predictions to draw '
            "(STUDY/predictions.tsv is missing or lacks this method).</p>",
        )
    return _section(
        "best-genes",
        title,
        _figure(
            rf.observed_predicted_figure(predictions, metrics, best, genes, labels),
            f"observed vs predicted, {best}",
            f"The {len(genes)} genes best predicted by <b>{_e(best)}</b> (highest mean r): residualised observed "
            "expression against the out-of-fold prediction of each individual, coloured by held-out fold, "
            "with the least-squares line.",
        ),
    )


def _ceiling_section(metrics: pd.DataFrame, has_truth: bool) -> str:
    if not has_truth:
        return _section(
            "ceiling",
            "Ceiling",
            '<p class="note">The heritability of each gene is known only for '
            "simulated cohorts (<code>truth.tsv</code> beside the expression file), so no ceiling "
            "is drawn.</p>",
        )
    return _section(
        "ceiling",
        "Ceiling (simulated truth)",
        _figure(
            rf.ceiling_figure(metrics),
            "per-gene r against the ceiling sqrt(h2)",
            "Per-gene r against sqrt(h2), the correlation a model knowing the true genetic effects would reach "
            "on average. Points near the dashed line reach the ceiling; genes with h2 = 0 sit at x = 0, "
            "where any r is noise.",
        ),
    )


# ---------------------------------------------------------------------------------------------
# Significance, paired intervals and the estimated heritability (STUDY/comparisons_per_gene.tsv)

MAX_INTERVAL_GENES = 40
MAX_PER_GENE_ROWS = 500


def _comparison_note() -> str:
    return (
        '<p class="muted">BH q: Benjamini-Hochberg over the pairs. Genes better at q &lt; 0.05: per-gene '
        "bootstrap over individuals of r(a) - r(b), BH over the pair's genes (see "
        '<a href="#statistics">Intervals and heritability</a>).</p>'
    )


def read_per_gene(study: Study) -> pd.DataFrame | None:
    """STUDY/comparisons_per_gene.tsv, or None when evaluate has not written it."""
    path = study.path / "comparisons_per_gene.tsv"
    if not path.exists():
        return None
    return pd.read_csv(path, sep="\t", dtype={"method_a": str, "method_b": str, "gene_id": str})


def seed_spread(study: Study, methods: list[str]) -> pd.DataFrame:
    """Per fit trained with several seeds (``models/<name>/seeds.tsv``, written by ``fit
    --seeds N``): genes, seeds, mean per-gene r of a single seed, and the mean and largest
    per-gene SD of r across seeds (how much a gene's r depends on the seed)."""
    rows = []
    for m in methods:
        path = study.path / "models" / m / "seeds.tsv"
        if not path.exists():
            continue
        df = pd.read_csv(path, sep="\t", dtype={"gene_id": str})
        sd = df.groupby("gene_id")["pearson_r"].std(ddof=1)
        rows.append(
            {
                "method": m,
                "genes": int(df["gene_id"].nunique()),
                "seeds": int(df["seed"].nunique()),
                "mean r (one seed)": float(df["pearson_r"].mean()),
                "mean SD across seeds": float(sd.mean()),
                "max SD across seeds": float(sd.max()),
            }
        )
    return pd.DataFrame(rows)


def _with_significant(comparisons: pd.DataFrame, per_gene: pd.DataFrame | None) -> pd.DataFrame:
    if per_gene is None or per_gene.empty:
        return comparisons
    return comparisons.merge(significant_pairs(per_gene), on=["method_a", "method_b"], how="left")


def _key_pair(per_gene: pd.DataFrame, methods: list[str], key: set[str]) -> tuple[str, str]:
    """The pair drawn: the first method against the field's reference when both exist (``key``,
    from the registry), else the first pair in report order."""
    pairs = list(per_gene[["method_a", "method_b"]].drop_duplicates().itertuples(index=False, name=None))
    for a, b in pairs:
        if {a, b} == key:
            return a, b
    rank = {m: i for i, m in enumerate(methods)}
    return min(
        pairs, key=lambda p: (min(rank.get(p[0], 99), rank.get(p[1], 99)), max(rank.get(p[0], 99), rank.get(p[1], 99)))
    )


def _statistics_section(
    metrics: pd.DataFrame,
    per_gene: pd.DataFrame | None,
    methods: list[str],
    key: set[str],
    seeds: pd.DataFrame,
    names: pd.Series,
) -> str:
    labels = {g: _label(g, n) for g, n in names.items()}
    parts = []
    if not seeds.empty:
        parts.append(
            "<h3>Seed spread</h3>"
            + _table(
                seeds,
                left=("method",),
                fmts={"mean r (one seed)": ".3f", "mean SD across seeds": ".3f", "max SD across seeds": ".3f"},
            )
            + '<p class="muted">Fits trained with several seeds per fold (<code>fit --seeds N</code>): the '
            "spread of each gene's out-of-fold r across seeds; the fit's own predictions average the seeds.</p>"
        )
    if "h2_cis" in metrics.columns and metrics["h2_cis"].notna().any():
        strata = h2_strata(metrics)
        strata = strata.set_index("method").loc[[m for m in methods if m in set(strata["method"])]].reset_index()
        parts.append(
            "<h3>Results by estimated cis-heritability</h3>"
            + _table(
                strata,
                labels={"h2_from": "h2 of", "mean_sqrt_h2": "mean sqrt(h2)", "ratio": "mean r / mean sqrt(h2)"},
                left=("method", "stratum"),
            )
        )
        parts.append(
            _figure(
                rf.h2_cis_figure(metrics),
                "per-gene r against estimated h2_cis",
                "Per-gene r against the gene's cis-heritability estimated by Haseman-Elston regression "
                "on the GRM of its window variants, inside the training folds (bars: +-1 jackknife SE). "
                "The dashed curve r = sqrt(h2) is what a model knowing the true effects reaches on "
                "average; dotted lines are the stratum borders. Stratifying by an estimate made on "
                "the same people slightly favours the high stratum (shared noise).",
            )
        )
    if per_gene is not None and not per_gene.empty:
        a, b = _key_pair(per_gene, methods, key)
        pair = per_gene[(per_gene["method_a"] == a) & (per_gene["method_b"] == b)].sort_values(
            ["q", "gene_id"], kind="stable"
        )
        shown = pair.head(MAX_INTERVAL_GENES)
        parts.append(
            f"<h3>Per-gene paired test: {_e(a)} against {_e(b)}</h3>"
            + _figure(
                rf.paired_interval_figure(shown, a, b, labels),
                f"per-gene r({a}) - r({b}) with bootstrap intervals",
                f"r({_e(a)}) - r({_e(b)}) per gene with its 95% interval from a bootstrap over individuals (the same "
                "individuals resampled for both methods); filled: Benjamini-Hochberg q &lt; 0.05 over this pair's "
                f"genes. {len(shown)} of {len(pair)} genes shown, smallest q first; every pair is in "
                "STUDY/comparisons_per_gene.tsv.",
            )
        )
        rows = per_gene.sort_values(["q", "method_a", "method_b", "gene_id"], kind="stable").head(MAX_PER_GENE_ROWS)
        parts.append(
            f"<details><summary>Per-gene paired tests of every pair ({len(rows)} of {len(per_gene)} rows, "
            "smallest q first)</summary>"
            + _table(
                with_gene_names(rows, names),
                fmts={"delta_r": "+.3f", "p": ".3g", "q": ".3g"},
                left=("method_a", "method_b", "gene_id", "gene_name"),
            )
            + "</details>"
        )
    if "pearson_q" in metrics.columns:
        wide = metrics.pivot(index="gene_id", columns="method", values="pearson_q")[methods].reset_index()
        wide = with_gene_names(wide, names)
        parts.append(
            "<details><summary>q-values of each gene's r (Benjamini-Hochberg over the genes of each "
            "method)</summary>"
            + _table(wide, fmts={m: ".3g" for m in methods}, left=("gene_id", "gene_name"))
            + "</details>"
        )
    if not parts:
        return _section(
            "statistics",
            "Intervals and heritability",
            '<p class="note">Run <code>hapexpr evaluate '
            "STUDY</code> with this version to get q-values, per-gene intervals and heritability.</p>",
        )
    return _section("statistics", "Intervals and heritability", "\n".join(parts))


def _explain_section(study: Study, explain: list) -> str:
    title = "Variant effects along the window"
    how = (
        "<code>hapexpr explain STUDY --method nt-transformer --gene GENE_ID --out EFFECTS.tsv</code> "
        "(kept as STUDY/explain/&lt;method&gt;/&lt;gene&gt;.tsv, which this report reads)"
    )
    if not explain:
        return _section(
            "explain",
            title,
            f'<p class="note">No variant effects yet. Run {how}, then '
            "<code>hapexpr report STUDY --overwrite</code>.</p>",
        )
    genes = study.genes.set_index("gene_id")
    parts = []
    for method, gene_id, effects in explain[:MAX_EXPLAIN_FIGURES]:
        if isinstance(effects, str) or gene_id not in genes.index:
            why = effects if isinstance(effects, str) else f"gene {gene_id} is not in this study"
            parts.append(f'<p class="note">{_e(method)}: skipped ({_e(why)}).</p>')
            continue
        g = genes.loc[gene_id]
        label = _label(gene_id, study.gene_names[gene_id])
        parts.append(
            _figure(
                rf.explain_figure(
                    effects,
                    tss=int(g["tss"]),
                    strand=str(g["strand"]),
                    window=study.window,
                    title=f"{label}, {method}: {len(effects)} variants",
                ),
                f"variant effects, {gene_id}, {method}",
                f"<b>{_e(label)}</b>, {_e(method)}: mean change in the predicted expression when each variant's "
                "allele is swapped in every haplotype carrying it (bars: +-1 sd over carriers), by position "
                "relative to the TSS on the gene's strand.",
            )
        )
    if len(explain) > MAX_EXPLAIN_FIGURES:
        parts.append(
            f'<p class="muted">{len(explain) - MAX_EXPLAIN_FIGURES} more files under STUDY/explain are not drawn.</p>'
        )
    return _section("explain", title, "\n".join(parts))


def _per_gene_section(study: Study, metrics: pd.DataFrame, methods: list[str], has_truth: bool) -> str:
    wide = metrics.pivot(index="gene_id", columns="method", values="pearson_r")[methods]
    if has_truth:
        wide.insert(0, "ceiling", metrics.groupby("gene_id")["ceiling"].first())
    order = [g for g in study.gene_ids if g in wide.index] + [g for g in wide.index if g not in set(study.gene_ids)]
    wide = with_gene_names(wide.loc[order].reset_index(), study.gene_names)
    return _section(
        "per-gene",
        "Per-gene r",
        "<details><summary>Pearson r of every gene and method "
        f"({len(wide)} genes; also in STUDY/metrics.tsv)</summary>"
        + _table(wide, left=("gene_id", "gene_name"))
        + "</details>",
    )


def _label(gene_id: str, name: str) -> str:
    """How a figure names a gene: ``ID (NAME)``, or the id alone when the gene has no other name."""
    return gene_id if not isinstance(name, str) or name == gene_id else f"{gene_id} ({name})"


def gene_labels(study: Study) -> dict[str, str]:
    """gene_id -> :func:`_label` for every gene of the study."""
    return {g: _label(g, n) for g, n in study.gene_names.items()}


def with_gene_names(df: pd.DataFrame, names: pd.Series) -> pd.DataFrame:
    """``df`` with a ``gene_name`` column right after ``gene_id`` (a gene the study lacks: its id)."""
    out = df.copy()
    ids = out["gene_id"].astype(str)
    out.insert(out.columns.get_loc("gene_id") + 1, "gene_name", ids.map(names).fillna(ids).to_numpy())
    return out


def _kv_table(items: list[tuple[str, object]]) -> str:
    rows = "".join(f'<tr><td class="l">{_e(k)}</td><td class="l">{_e(v)}</td></tr>' for k, v in items)
    return f"<table><tbody>{rows}</tbody></table>"


def _provenance_section(study: Study, prov: Provenance, methods: list[str]) -> str:
    meta = study.meta
    about = _kv_table(
        [
            ("study", study.path.resolve()),
            ("created", meta.get("created", "?")),
            ("written by hapexpr", meta.get("hapexpr_version", "?")),
            ("report by hapexpr", __version__),
            ("format version", meta.get("format_version", "?")),
        ]
    )
    params = _kv_table([(k, v) for k, v in sorted(meta.get("params", {}).items())])
    inputs = pd.DataFrame(
        [
            {"input": k, "path": v.get("path", ""), "size": v.get("size"), "sha256": str(v.get("sha256", ""))[:12]}
            for k, v in sorted(meta.get("inputs", {}).items())
        ]
    )
    inputs_html = _table(inputs, left=("input", "path", "sha256")) if not inputs.empty else "<p>none recorded</p>"
    fits = pd.DataFrame(
        [
            {
                "method": m,
                "fit key": prov.fits[m].get("key", "?"),
                "complete": prov.fits[m].get("complete", "?"),
                "options": (
                    json.dumps(prov.fits[m]["options"], sort_keys=True, default=str)
                    if "options" in prov.fits[m]
                    else "no fit.json (not written by hapexpr fit)"
                ),
                "models": "; ".join(prov.models.get(m, [])) or "-",
            }
            for m in methods
        ]
    )
    body = (
        f"<h3>Study</h3>{about}<h3>Parameters</h3>{params}<h3>Inputs</h3>{inputs_html}"
        f"<h3>Methods</h3>{_table(fits, left=tuple(fits.columns))}"
    )
    if prov.stores:
        stores = pd.DataFrame(
            [
                {
                    "fingerprint": s["fingerprint"],
                    "model": s.get("model", "?"),
                    "tiny": s.get("tiny", "?"),
                    "layer": "-" if s.get("layer", "?") is None else str(s.get("layer", "?")),
                    "bins": s.get("bins", "?"),
                    "dim": s.get("dim", "?"),
                    "weights sha256": str(s.get("weights_sha256", ""))[:12],
                    "embedder": s.get("embedder", "nucleotide-transformer"),
                    "tokenizer": s.get("tokenizer", "-"),
                    "updated": s.get("updated", "?"),
                }
                for s in prov.stores
            ]
        )
        body += f"<h3>Embedding stores</h3>{_table(stores, left=tuple(stores.columns))}"
    return _section("provenance", "Provenance", body)
