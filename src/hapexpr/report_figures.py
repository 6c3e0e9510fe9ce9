"""The report's figures: matplotlib on the Agg canvas, returned as PNG bytes.

Each function takes tidy tables (no study access) and returns ``bytes`` of one PNG, or ``None``
when the data cannot support the figure (the report then says why). ``Figure`` objects are built
directly rather than through ``pyplot``, so no global backend or figure registry is touched and
nothing needs a display.
"""

from __future__ import annotations

import io
from itertools import combinations

import numpy as np
import pandas as pd

_PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#ff7f0e",
    "#17becf",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
DPI = 96


def order_methods(methods) -> list[str]:
    """Distinct methods in the order given (the report sorts its tables in registry order)."""
    return list(dict.fromkeys(methods))


def method_colours(methods) -> dict[str, str]:
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(order_methods(methods))}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No Software tag: the PNG would otherwise carry matplotlib's web address.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def scatter_pairs(metrics: pd.DataFrame, reference: str | None = None) -> list[tuple[str, str]]:
    """Method pairs (x, y) for the method-versus-method scatters, most important first: every
    method against the ``reference`` (the field's baseline; else the first method), in the
    table's order, then the remaining pairs."""
    methods = order_methods(metrics["method"].unique())
    if len(methods) < 2:
        return []
    ref = reference if reference in methods else methods[0]
    first = [(ref, m) for m in methods if m != ref]
    rest = [(a, b) for a, b in combinations(methods, 2) if ref not in (a, b)]
    return first + rest


def _wide_r(metrics: pd.DataFrame) -> pd.DataFrame:
    """(genes, methods) Pearson r, NaN (constant prediction) counted as 0 as in the summary."""
    return metrics.pivot(index="gene_id", columns="method", values="pearson_r").astype(float)


def _pair_panel(ax, wide: pd.DataFrame, x: str, y: str, ceiling: pd.Series | None, vmax: float):
    both = wide[[x, y]].dropna(how="all").fillna(0.0)
    xs, ys = both[x].to_numpy(), both[y].to_numpy()
    if ceiling is not None:
        c = ceiling.reindex(both.index).to_numpy(dtype=float)
        mappable = ax.scatter(xs, ys, c=c, cmap="viridis", vmin=0, vmax=vmax, s=22, edgecolors="k", linewidths=0.3)
    else:
        mappable = ax.scatter(xs, ys, s=22, color="#1f77b4", edgecolors="k", linewidths=0.3)
    lo = min(-0.1, float(np.min(np.r_[xs, ys])) - 0.05) if len(xs) else -0.1
    hi = max(0.5, float(np.max(np.r_[xs, ys])) + 0.05) if len(xs) else 1.0
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", zorder=0)
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    above, below = int((ys > xs).sum()), int((ys < xs).sum())
    ax.set_xlabel(f"r, {x}")
    ax.set_ylabel(f"r, {y}")
    ax.set_title(f"genes won: {y} {above}, {x} {below} (of {len(xs)})", fontsize=8)
    return mappable


def scatter_figure(metrics: pd.DataFrame, pairs: list[tuple[str, str]], ceiling: pd.Series | None) -> bytes:
    """Per-gene r of method y against method x for each pair, with the diagonal y = x.

    ceiling: sqrt(h2) per gene_id (colours the points, one shared scale) or None when the truth
    is unknown.
    """
    wide = _wide_r(metrics)
    rows, cols = _grid(len(pairs))
    side = 4.6 if len(pairs) == 1 else 3.5
    vmax = 1.0
    if ceiling is not None and np.isfinite(ceiling.to_numpy(dtype=float)).any():
        vmax = max(1e-6, float(np.nanmax(ceiling.to_numpy(dtype=float))))
    fig = _figure(side * cols + (0.9 if ceiling is not None else 0), side * rows)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(pairs))]
    mappable = None
    for ax, (x, y) in zip(axes, pairs):
        mappable = _pair_panel(ax, wide, x, y, ceiling, vmax)
    if ceiling is not None:
        fig.colorbar(mappable, ax=axes, label="ceiling sqrt(h2)", shrink=0.8 if rows == 1 else 0.5)
    return _png(fig)


def distribution_figure(metrics: pd.DataFrame) -> bytes:
    """Box plot of per-gene r per method with every gene drawn as a jittered point."""
    methods = order_methods(metrics["method"].unique())
    colours = method_colours(methods)
    fig = _figure(max(5.0, 1.1 * len(methods) + 2), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    data = [metrics.loc[metrics["method"] == m, "pearson_r"].fillna(0.0).to_numpy() for m in methods]
    ax.boxplot(
        data,
        positions=np.arange(len(methods)),
        widths=0.55,
        showfliers=False,
        medianprops={"color": "k"},
        boxprops={"color": "0.3"},
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same study gives the same picture
    for i, (m, r) in enumerate(zip(methods, data)):
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(r)), r, s=14, alpha=0.75, color=colours[m], edgecolors="none")
        ax.scatter([i], [r.mean()], marker="D", s=30, color="w", edgecolors="k", zorder=3)
    ax.axhline(0, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(methods)), methods, rotation=20, ha="right")
    ax.set_ylabel("Pearson r across held-out individuals")
    ax.set_title("Per-gene r (box: quartiles; diamond: mean; constant predictions as r = 0)", fontsize=9)
    return _png(fig)


def observed_predicted_figure(
    predictions: pd.DataFrame, metrics: pd.DataFrame, method: str, genes: list[str], labels: dict | None = None
) -> bytes:
    """Observed (residualised) vs out-of-fold predicted expression of ``method`` for ``genes``,
    one panel per gene, points coloured by held-out fold, with the least-squares line.
    labels: gene_id -> how to name the gene in its panel's title (default the id)."""
    labels = labels or {}
    rows, cols = _grid(len(genes), 4)
    fig = _figure(3.3 * cols, 3.2 * rows)
    sub = predictions[predictions["method"] == method]
    r_of = metrics[metrics["method"] == method].set_index("gene_id")["pearson_r"]
    for i, g in enumerate(genes):
        ax = fig.add_subplot(rows, cols, i + 1)
        d = sub[sub["gene_id"] == g]
        ax.scatter(d["predicted"], d["observed"], c=d["fold"], cmap="tab10", vmin=0, vmax=9, s=12, alpha=0.8)
        if len(d) > 2 and np.ptp(d["predicted"]) > 0:
            slope, icpt = np.polyfit(d["predicted"], d["observed"], 1)
            xs = np.linspace(d["predicted"].min(), d["predicted"].max(), 2)
            ax.plot(xs, slope * xs + icpt, color="k", lw=1)
        ax.set_title(f"{labels.get(g, g)}  r = {r_of.get(g, np.nan):.3f}", fontsize=9)
        ax.set_xlabel(f"predicted ({method})")
        ax.set_ylabel("observed (residualised)")
    folds = sorted(int(f) for f in sub.loc[sub["gene_id"].isin(genes), "fold"].unique())
    if folds:
        from matplotlib import colormaps
        from matplotlib.lines import Line2D

        colour = colormaps["tab10"]  # as the scatter draws folds: vmin 0, vmax 9
        handles = [Line2D([], [], ls="", marker="o", ms=5, color=colour(f / 9)) for f in folds]
        fig.legend(handles, [f"fold {f}" for f in folds], title="held-out fold", loc="outside right center")
    return _png(fig)


def ceiling_figure(metrics: pd.DataFrame) -> bytes:
    """Per-gene r against the ceiling sqrt(h2) of the simulated truth, one colour per method;
    the dashed line r = sqrt(h2) is the best a perfect model could expect on average."""
    methods = order_methods(metrics["method"].unique())
    colours = method_colours(methods)
    fig = _figure(6.2, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(1)
    for m in methods:
        d = metrics[metrics["method"] == m]
        c = d["ceiling"].to_numpy(dtype=float)
        # a little horizontal jitter separates methods on the same gene
        ax.scatter(
            c + rng.uniform(-0.006, 0.006, len(c)),
            d["pearson_r"].fillna(0.0),
            s=18,
            alpha=0.8,
            color=colours[m],
            label=m,
            edgecolors="none",
        )
    top = max(0.1, float(np.nanmax(metrics["ceiling"].to_numpy(dtype=float))) + 0.05)
    ax.plot([0, top], [0, top], color="0.3", ls="--", lw=1, label="r = sqrt(h2)")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("ceiling sqrt(h2) (simulated truth)")
    ax.set_ylabel("Pearson r across held-out individuals")
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return _png(fig)


def explain_figure(effects: pd.DataFrame, *, tss: int, strand: str, window: int, title: str) -> bytes:
    """Mean change in predicted expression per variant (with +-1 sd bars) along the window,
    position relative to the TSS on the gene's strand (negative = upstream).

    effects: ``gene_id variant_id pos ref alt in_window n_carriers mean_effect sd_effect``.
    """
    sign = -1 if strand == "-" else 1
    rel = sign * (effects["pos"].to_numpy(dtype=np.int64) - int(tss))
    eff = effects["mean_effect"].to_numpy(dtype=float)
    sd = np.nan_to_num(effects["sd_effect"].to_numpy(dtype=float))
    inside = effects["in_window"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    fig = _figure(8.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.vlines(rel, 0, eff, color=np.where(inside, "#1f77b4", "0.7"), lw=1)
    ax.errorbar(
        rel[inside],
        eff[inside],
        yerr=sd[inside],
        fmt="o",
        ms=3.5,
        color="#1f77b4",
        ecolor="#9ec3e6",
        lw=0.8,
        label="in window",
    )
    if (~inside).any():
        ax.errorbar(
            rel[~inside],
            eff[~inside],
            yerr=sd[~inside],
            fmt="o",
            ms=3,
            color="0.6",
            ecolor="0.85",
            lw=0.8,
            label="margin (outside window)",
        )
    top = np.argsort(-np.abs(eff))[: min(3, len(eff))]
    for i in top:
        ax.annotate(
            str(effects["variant_id"].iloc[i]), (rel[i], eff[i]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.axhline(0, color="0.5", lw=0.8)
    ax.axvline(0, color="#d62728", lw=0.8, ls=":", label="TSS")
    pad = window * 0.03
    ax.set_xlim(min(-window / 2, rel.min(initial=0)) - pad, max(window / 2, rel.max(initial=0)) + pad)
    ax.set_xlabel("position relative to TSS (bp, gene strand; negative = upstream)")
    ax.set_ylabel("mean effect on prediction")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="best")
    return _png(fig)


def h2_cis_figure(metrics: pd.DataFrame) -> bytes:
    """Per-gene r against the estimated cis-heritability h2_cis (HE regression, +-1 SE bars),
    one colour per method, with the curve r = sqrt(h2) and the stratum borders 0.05 and 0.2."""
    methods = order_methods(metrics["method"].unique())
    colours = method_colours(methods)
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(2)
    for m in methods:
        d = metrics[metrics["method"] == m]
        h = d["h2_cis"].to_numpy(dtype=float)
        ax.errorbar(
            h + rng.uniform(-0.004, 0.004, len(h)),
            d["pearson_r"].fillna(0.0),
            xerr=d["h2_cis_se"],
            fmt="o",
            ms=3.5,
            alpha=0.8,
            color=colours[m],
            ecolor=colours[m],
            elinewidth=0.5,
            label=m,
        )
    finite = metrics["h2_cis"].to_numpy(dtype=float)
    top = max(0.3, float(np.nanmax(finite)) + 0.05) if np.isfinite(finite).any() else 1.0
    xs = np.linspace(0, top, 100)
    ax.plot(xs, np.sqrt(xs), color="0.3", ls="--", lw=1, label="r = sqrt(h2)")
    for border in (0.05, 0.2):
        ax.axvline(border, color="0.8", lw=0.8, ls=":", zorder=0)
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("estimated cis-heritability h2_cis (HE regression, inside training folds)")
    ax.set_ylabel("Pearson r across held-out individuals")
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return _png(fig)


def paired_interval_figure(per_gene: pd.DataFrame, a: str, b: str, labels: dict | None = None) -> bytes:
    """Forest plot of r(a) - r(b) per gene with its 95% bootstrap interval, filled where the
    bootstrap q < 0.05. per_gene: rows of comparisons_per_gene.tsv for one pair, in drawing order;
    labels: gene_id -> tick label (default the id)."""
    labels = labels or {}
    fig = _figure(6.4, 1.2 + 0.22 * len(per_gene))
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(len(per_gene))[::-1]
    d = per_gene["delta_r"].to_numpy(dtype=float)
    lo, hi = per_gene["ci_low"].to_numpy(dtype=float), per_gene["ci_high"].to_numpy(dtype=float)
    sig = (per_gene["q"] < 0.05).to_numpy()
    ax.hlines(ys, lo, hi, color="0.4", lw=1)
    ax.scatter(d[sig], ys[sig], color="#d62728", s=22, zorder=3, label="q < 0.05")
    ax.scatter(d[~sig], ys[~sig], facecolors="w", edgecolors="0.3", s=22, zorder=3, label="q >= 0.05")
    ax.axvline(0, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(ys, [labels.get(g, g) for g in per_gene["gene_id"].astype(str)], fontsize=7)
    ax.set_xlabel(f"r({a}) - r({b}), 95% bootstrap interval over individuals")
    ax.legend(fontsize=7, frameon=False, loc="best")
    return _png(fig)
