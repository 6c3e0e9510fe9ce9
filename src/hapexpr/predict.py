"""``hapexpr predict``: expression of new people from a study's final fits (``hapexpr.final``).

For every gene the new VCF is read over the gene's stored region (window plus margin), on its
own name for the contig (``chr7`` and ``7`` are matched), and every record's REF is checked
against the reference bases the study stored for that region. Then, per method:

- ``elastic-net``: the ALT dosages of the model's variants; a model variant absent from the new
  VCF gets the study's mean dosage (PrediXcan's convention), a new-VCF variant the study lacked
  has no weight and is ignored.
- sequence methods (``ridge-probe``, ``nt-transformer``, ``enformer``): each new person's two
  haplotypes are built from the new VCF's records exactly as ``prepare`` builds the study's
  (:func:`hapexpr.haplotypes.unique_haplotypes` and :func:`hapexpr.windows.window_sequences`), so a
  study variant absent from the new VCF is REF and a variant the study never saw is part of the
  person's sequence. Unseen sequences are embedded through the study's content-addressed cache.

Both counts are reported per gene in the output and summarised on the terminal. Columns:
``docs/predict-explain.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError
from hapexpr.io.atomic import atomic_open
from hapexpr.study import GeneData, Study
from hapexpr.progress import console, track_genes

PRED_COLUMNS = ["method", "gene_id", "sample_id", "predicted", "n_study_variants_missing", "n_new_variants", "in_study"]
SEQUENCE_BASES = ("ridge-probe", "nt-transformer", "enformer")


def variant_keys(pos, ref, alt) -> list[tuple[int, str, str]]:
    """(pos, REF, ALT) upper-cased: how variants of two VCFs are matched (ids may differ)."""
    return [(int(p), str(r).upper(), str(a).upper()) for p, r, a in zip(pos, ref, alt)]


@dataclass(frozen=True)
class NewVariants:
    """The new VCF's records over one gene's region.

    table: ``variant_id chrom pos ref alt in_window`` like ``GeneData.variants``;
    genotypes: (variants, samples, 2) int8; in_study: (variants,) bool, also a study variant.
    """

    table: pd.DataFrame
    genotypes: np.ndarray
    in_study: np.ndarray

    def gene(self, gene: GeneData) -> GeneData:
        """The new people as a GeneData over the study gene's region: same reference, TSS and
        window, their own variants and distinct haplotypes (built like ``prepare`` does)."""
        from hapexpr.haplotypes import unique_haplotypes

        alleles, index = unique_haplotypes(self.genotypes)
        return dataclasses.replace(gene, variants=self.table, genotypes=self.genotypes,
                                   hap_index=index, hap_alleles=alleles)


def read_new_variants(reader, gene: GeneData, *, extra: tuple[int, int] | None = None) -> NewVariants | None:
    """Records of ``reader`` (a :class:`hapexpr.io.vcf.VcfReader`) over ``gene``'s stored region
    (and ``extra``, a wider 1-based span the elastic net may read), REF checked against the
    study's reference bases; None when the VCF has no contig for the gene."""
    from hapexpr.windows import window_bounds

    chrom = reader.resolve(gene.chrom)
    if chrom is None:
        return None
    start, end = gene.region_start, gene.region_start + len(gene.reference) - 1
    lo, hi = (start, end) if extra is None else (min(start, extra[0]), max(end, extra[1]))
    v = reader.fetch(chrom, max(lo, 1), hi)
    _check_ref(reader.path, gene, v)
    w_lo, w_hi = window_bounds(gene.tss, gene.strand, gene.window)
    ref_end = v.pos + np.array([len(r) for r in v.ref], dtype=np.int64) - 1
    table = pd.DataFrame({"variant_id": np.asarray(v.ids, dtype=object), "chrom": gene.chrom, "pos": v.pos,
                          "ref": np.asarray(v.ref, dtype=object), "alt": np.asarray(v.alt, dtype=object),
                          "in_window": (ref_end >= w_lo) & (v.pos <= w_hi)})
    study_keys = set(variant_keys(gene.variants["pos"], gene.variants["ref"], gene.variants["alt"]))
    in_study = np.array([k in study_keys for k in variant_keys(v.pos, v.ref, v.alt)], dtype=bool)
    return NewVariants(table=table, genotypes=np.asarray(v.genotypes, dtype=np.int8), in_study=in_study)


def _check_ref(vcf_path, gene: GeneData, v) -> None:
    """REF of records inside the stored region must equal the study's reference bases there
    (records past it are only used by the elastic net, matched on position and alleles)."""
    start, n = gene.region_start, len(gene.reference)
    for p, r, a in zip(v.pos.tolist(), v.ref, v.alt):
        o = p - start
        if o < 0 or o >= n:
            continue
        have = gene.reference[o : o + len(r)]
        if have != str(r).upper().encode()[: len(have)]:
            raise InputError(
                f"REF does not match the study's reference for gene {gene.gene_id} (which has "
                f"{have.decode()} there)",
                path=vcf_path, record=f"{v.chrom}:{p} {r}>{a}",
                hint="the new VCF must use the genome build and FASTA of the study; check it with "
                "`bcftools norm --check-ref e -f REF.fa NEW.vcf.gz`",
            )


class SequenceFeatures:
    """Per-haplotype features of window sequences for a sequence method, and how a person's
    two haplotypes become the model's input; shared by ``predict`` and ``explain``.

    ``haplotypes(gene, sequences)`` -> (unique, ...) float32; ``people(per_hap, index)`` with
    ``index`` (samples, 2) -> the final model's X: ridge-probe (samples, dim) summed over the
    haplotypes; nt-transformer (samples, 2, bins, dim); enformer (samples, 2, tracks).
    """

    def __init__(self, study: Study, name: str) -> None:
        from hapexpr.final import final_method

        self.study, self.name = study, name
        self.method, self.state = final_method(study, name)
        self.base = "enformer" if name.startswith("enformer") else name
        self._embedder = None

    def haplotypes(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        if self.base == "enformer":
            return self._enformer(gene, sequences)
        if self._embedder is None:
            from hapexpr.embed import load_embedder

            self._embedder = load_embedder(self.study.path, fingerprint=self.state["options"]["fingerprint"])
        bins, mean = self._embedder.embed(list(sequences), tss_offset=gene.tss_offset)
        return mean if self.base == "ridge-probe" else bins

    def people(self, per_hap: np.ndarray, index: np.ndarray) -> np.ndarray:
        x = per_hap[np.asarray(index, dtype=np.int64)]
        return x.sum(axis=1) if self.base == "ridge-probe" else x

    def _enformer(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(unique, tracks) outputs; the study gene's cached outputs are reused, the rest run
        through the model (not cached: the cache file holds the gene's study haplotypes only)."""
        from hapexpr.models.enformer_store import OutputCache, centre_on_tss, sequence_key

        runner = self.method.runner(self.study)
        inputs = [centre_on_tss(s, gene.tss_offset, runner.seq_len) for s in sequences]
        keys = [sequence_key(s) for s in inputs]
        cached = OutputCache(self.study.path, runner).load(gene.gene_id)
        todo = {k: s for k, s in zip(keys, inputs) if k not in cached}
        if todo:
            cached.update(zip(todo, runner.predict(list(todo.values()))))
        if not keys:
            return np.zeros((0, runner.n_tracks), dtype=np.float32)
        return np.stack([cached[k] for k in keys]).astype(np.float32)


def _linear_prediction(est, new: NewVariants) -> tuple[np.ndarray, int]:
    """((samples,) elastic-net predictions, number of weighted model variants missing)."""
    feats = est.feature_variants_
    lookup = {k: i for i, k in enumerate(variant_keys(new.table["pos"], new.table["ref"], new.table["alt"]))}
    dosage = new.genotypes.sum(axis=2, dtype=np.int16).astype(np.float64)  # (variants, samples)
    X = np.empty((new.genotypes.shape[1], len(feats)))
    missing = np.zeros(len(feats), dtype=bool)
    for j, k in enumerate(variant_keys(feats["pos"], feats["ref"], feats["alt"])):
        i = lookup.get(k)
        if i is None:
            X[:, j] = est.study_mean_dosage_[j]  # PrediXcan: an unobserved variant at its mean
            missing[j] = True
        else:
            X[:, j] = dosage[i]
    return est.predict(X), int(np.count_nonzero(missing & (est.coef_ != 0)))


def predict_new(study_path, method: str, *, vcf, out, overwrite: bool = False, progress: bool = True) -> pd.DataFrame:
    """Predict every gene's expression for every sample of ``vcf``; writes ``out`` (TSV,
    columns ``PRED_COLUMNS``) atomically and returns it."""
    from hapexpr.final import ensure_final, load_final, split_method
    from hapexpr.io.vcf import VcfReader

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError("the output file already exists", path=out,
                         hint="pass --overwrite to replace it, or choose another --out")
    study = Study.open(study_path)
    base, _ = split_method(method)
    reader = VcfReader(vcf, allow_unphased=base == "elastic-net")  # dosages need no phase
    name = ensure_final(study.path, method)
    features = SequenceFeatures(study, name) if base in SEQUENCE_BASES else None
    samples = list(reader.samples)
    in_study = np.isin(samples, study.sample_ids)
    parts, counts, skipped = [], [], []
    for gene_id in track_genes(study.gene_ids, f"predict {name}", enabled=progress):
        gene = study.gene(gene_id)
        est = load_final(study.path, name, gene_id)
        extra = None
        if features is None and len(est.feature_variants_):
            extra = (int(est.feature_variants_["pos"].min()), int(est.feature_variants_["pos"].max()))
        new = read_new_variants(reader, gene, extra=extra)
        if new is None:
            skipped.append(gene_id)
            continue
        window_new = new.table["in_window"].to_numpy() & ~new.in_study
        n_new = int(np.count_nonzero(window_new))
        if features is None:
            pred, n_missing = _linear_prediction(est, new)
        else:
            have = set(variant_keys(new.table["pos"], new.table["ref"], new.table["alt"]))
            v = gene.variants[gene.variants["in_window"]]
            n_missing = sum(k not in have for k in variant_keys(v["pos"], v["ref"], v["alt"]))
            people = new.gene(gene)
            per_hap = features.haplotypes(people, people.sequences)
            pred = est.predict(features.people(per_hap, people.hap_index))
        counts.append((gene_id, n_missing, n_new))
        parts.append(pd.DataFrame({"method": name, "gene_id": gene_id, "sample_id": samples,
                                   "predicted": np.asarray(pred, dtype=np.float64),
                                   "n_study_variants_missing": n_missing, "n_new_variants": n_new,
                                   "in_study": in_study}))
    if not parts:
        raise InputError(
            f"the VCF has no contig of any study gene ({', '.join(sorted(set(study.genes['chrom'])))})",
            path=vcf, hint="use a VCF of the same genome build and chromosomes as the study",
        )
    table = pd.concat(parts, ignore_index=True)[PRED_COLUMNS]
    with atomic_open(out) as fh:
        table.to_csv(fh, sep="\t", index=False, float_format="%.10g")
    _summary(name, table, counts, skipped, in_study, out)
    return table


def _summary(name, table, counts, skipped, in_study, out) -> None:
    n_missing = sum(c[1] for c in counts)
    genes_missing = sum(c[1] > 0 for c in counts)
    n_new = sum(c[2] for c in counts)
    console.print(f"{name}: predicted {table['sample_id'].nunique()} people x {len(counts)} genes -> {out}")
    filled = "filled with the study's mean dosage" if name == "elastic-net" else "taken as REF in the sequences"
    console.print(f"  study variants missing from the new VCF: {n_missing} in {genes_missing} gene(s) ({filled})")
    used = "ignored: the elastic net has no weight for them" if name == "elastic-net" else "part of the people's sequences"
    console.print(f"  new variants (in the VCF, not in the study) in the windows: {n_new} ({used})")
    if in_study.any():
        console.print(f"  [yellow]{int(in_study.sum())} sample(s) are study individuals (in_study = True); "
                      "their predictions are not out-of-sample[/]")
    if skipped:
        console.print(f"  [yellow]{len(skipped)} gene(s) skipped, their contig is not in the VCF:[/] "
                      + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
