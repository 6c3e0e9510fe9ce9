"""The study directory: the contract between stages.

``prepare`` writes it once; every later stage opens it read-only through :class:`Study` and
writes only its own part (``embeddings/``, ``models/``, ``predictions.tsv``, ...). Layout and
columns are documented in ``docs/study-directory.md``.

Axes are fixed everywhere: ``(genes, samples, haplotypes, ...)``; the sample axis is the order
of ``samples.tsv`` and the haplotype axis has length 2 (ploidy).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import StudyError
from hapexpr.windows import window_sequences

FORMAT_VERSION = 1
PLOIDY = 2
GENE_COLUMNS = [
    "gene_id",
    "gene_name",
    "chrom",
    "tss",
    "strand",
    "window_start",
    "window_end",
    "n_variants",
    "n_unique_haplotypes",
    "gene_start",
    "gene_end",
]


def gene_file_name(gene_id: str) -> str:
    """File name of a gene's arrays; gene ids may hold characters unsafe in file names."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", gene_id) + ".npz"


@dataclass(frozen=True)
class GeneData:
    """Everything ``prepare`` stored for one gene.

    Haplotype sequences are not stored base by base (at Enformer's 196,608 bp that would be
    ~100 MB a gene): they are fully determined by the reference over the gene's region and the
    ALT alleles each distinct haplotype carries, and are rebuilt on access by the same code that
    ``prepare`` and ``hapexpr haplotypes`` use.

    variants: table ``variant_id chrom pos ref alt in_window`` in reference coordinates (1-based
        ``pos``), one row per biallelic record in the region (window plus margin), in VCF order;
        ``in_window`` marks the records that touch the window itself.
    genotypes: (variants, samples, haplotypes) int8, 0 = REF, 1 = ALT.
    hap_index: (samples, haplotypes) int32, row of ``hap_alleles`` carried by each person.
    hap_alleles: (unique, variants) bool, the ALT alleles carried by each distinct haplotype.
    reference: upper-case reference bases over ``region_start..region_start+len-1`` (1-based);
        the region is the window plus a margin so indels never leave the window short.
    """

    gene_id: str
    chrom: str
    tss: int
    strand: str
    window: int
    region_start: int
    reference: bytes
    variants: pd.DataFrame
    genotypes: np.ndarray
    hap_index: np.ndarray
    hap_alleles: np.ndarray

    @property
    def tss_offset(self) -> int:
        """0-based index of the TSS in every window sequence."""
        return self.window // 2

    @property
    def dosages(self) -> np.ndarray:
        """(variants, samples) float32 ALT allele dosage in 0..2."""
        return self.genotypes.sum(axis=2, dtype=np.int16).astype(np.float32)

    @cached_property
    def sequences(self) -> list[bytes]:
        """(unique,) window sequences of the distinct haplotypes, 5'->3' on the gene's strand,
        each ``window`` bp long with the TSS at ``tss_offset``."""
        if not self.reference:
            raise StudyError(
                f"gene {self.gene_id} has no reference sequence: the study was prepared without --fasta",
                hint="prepare the study again with --fasta to use sequence methods",
            )
        return window_sequences(self)

    def sequence(self, sample: int, haplotype: int) -> bytes:
        return self.sequences[int(self.hap_index[sample, haplotype])]


@dataclass(frozen=True)
class CisGenotypes:
    """ALT dosages of every biallelic variant within +-``cis_window`` bp of one gene's TSS.

    variants: table ``variant_id chrom pos ref alt`` (1-based ``pos``, VCF order).
    dosages: (variants, samples) int8 in 0..2, samples in study order (a read-only memmap view).
    """

    gene_id: str
    cis_window: int
    variants: pd.DataFrame
    dosages: np.ndarray


def cis_file_stem(contig: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", contig)


def write_gene(path: Path, data: GeneData) -> None:
    """Write one gene's arrays as an ``.npz`` (no pickled objects)."""
    v = data.variants
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            chrom=np.str_(data.chrom),
            tss=np.int64(data.tss),
            strand=np.str_(data.strand),
            window=np.int64(data.window),
            region_start=np.int64(data.region_start),
            reference=np.frombuffer(data.reference, dtype=np.uint8),
            variant_id=np.asarray(v["variant_id"], dtype=str),
            pos=np.asarray(v["pos"], dtype=np.int64),
            ref=np.asarray(v["ref"], dtype=str),
            alt=np.asarray(v["alt"], dtype=str),
            in_window=np.asarray(v["in_window"], dtype=bool),
            genotypes=np.ascontiguousarray(data.genotypes, dtype=np.int8),
            hap_index=np.ascontiguousarray(data.hap_index, dtype=np.int32),
            hap_alleles=np.ascontiguousarray(data.hap_alleles, dtype=bool),
        )


def read_gene(path: Path, gene_id: str) -> GeneData:
    with np.load(path, allow_pickle=False) as z:
        chrom = str(z["chrom"])
        n = len(z["pos"])
        variants = pd.DataFrame(
            {
                "variant_id": z["variant_id"].astype(object),
                "chrom": np.full(n, chrom, dtype=object),
                "pos": z["pos"],
                "ref": z["ref"].astype(object),
                "alt": z["alt"].astype(object),
                "in_window": z["in_window"],
            }
        )
        return GeneData(
            gene_id=gene_id,
            chrom=chrom,
            tss=int(z["tss"]),
            strand=str(z["strand"]),
            window=int(z["window"]),
            region_start=int(z["region_start"]),
            reference=z["reference"].tobytes(),
            variants=variants,
            genotypes=z["genotypes"],
            hap_index=z["hap_index"],
            hap_alleles=z["hap_alleles"],
        )


class Study:
    """A prepared study directory, opened read-only.

    >>> study = Study.open("s")
    >>> study.samples            # sample_id, fold (the sample axis of every array)
    >>> study.genes              # one row per gene, columns GENE_COLUMNS
    >>> study.expression         # (genes, samples) DataFrame, as given (not residualised)
    >>> study.gene("ENSG...")    # GeneData
    """

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.meta = meta

    @classmethod
    def open(cls, path: str | Path) -> Study:
        path = Path(path)
        meta_path = path / "study.json"
        if not meta_path.exists():
            raise StudyError(
                "no complete study here (study.json is missing)",
                path=path,
                hint="run `hapexpr prepare ... --out "
                f"{path}` first; if it was interrupted, rerun the same command to finish it",
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise StudyError(f"study.json is not valid JSON ({exc})", path=meta_path) from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise StudyError(
                f"study format version {meta.get('format_version')} is not the version this "
                f"hapexpr reads ({FORMAT_VERSION})",
                path=meta_path,
                hint="prepare the study again with this version of hapexpr",
            )
        return cls(path, meta)

    @property
    def params(self) -> dict:
        return self.meta["params"]

    @property
    def window(self) -> int:
        return int(self.params["window"])

    @property
    def n_folds(self) -> int:
        return int(self.params["folds"])

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    @property
    def residualised(self) -> bool:
        """True when the user said the expression is already residualised on covariates."""
        return bool(self.params.get("residualised", False))

    @property
    def normalise(self) -> str:
        """How expression is normalised inside the training folds: none, log2 or inverse-normal."""
        return str(self.params.get("normalise", "none"))

    @property
    def has_sequence(self) -> bool:
        """False for a genotype-only study (prepared without --fasta)."""
        return bool(self.meta.get("has_sequence", True))

    def require_sequence(self, method: str) -> None:
        """Raise a :class:`StudyError` naming ``method`` when the study has no sequence."""
        if not self.has_sequence:
            raise StudyError(
                f"{method} needs haplotype sequences, and this study was prepared without --fasta (genotype-only)",
                path=self.path,
                hint="use a genotype method (elastic-net), or prepare the study again with --fasta",
            )

    @property
    def cis_window(self) -> int | None:
        """+-bp of the stored cis genotypes (``cis/``), or None when the study has none."""
        value = self.params.get("cis_window")
        return None if value is None else int(value)

    @cached_property
    def _cis_index(self) -> pd.DataFrame:
        path = self.path / "cis" / "genes.tsv"
        if self.cis_window is None or not path.exists():
            raise StudyError(
                "this study stores no cis-window genotypes",
                path=self.path,
                hint="prepare it again with this version of hapexpr (--cis-window)",
            )
        return pd.read_csv(path, sep="\t", dtype={"gene_id": str, "chrom": str, "file": str}).set_index("gene_id")

    def cis_genotypes(self, gene_id: str, *, around: str = "tss") -> CisGenotypes:
        """Dosages of every biallelic variant within +-``cis_window`` of the gene's TSS
        (``around="tss"``), or from gene start - cis_window to gene end + cis_window
        (``around="gene"``, PredictDB's window; studies prepared before hapexpr stored gene
        spans have none)."""
        if gene_id not in self._cis_index.index:
            raise StudyError(f"gene {gene_id} is not in this study's cis genotypes", path=self.path)
        row = self._cis_index.loc[gene_id]
        if around == "gene":
            if "gene_first" not in row.index:
                raise StudyError(
                    "this study's cis store holds +-cis_window around each TSS only, not the gene-body window",
                    path=self.path / "cis" / "genes.tsv",
                    hint="prepare the study again with this version of hapexpr, or fit with --cis-from tss",
                )
            lo, hi = int(row["gene_first"]), int(row["gene_stop"])
        elif around == "tss":
            lo, hi = int(row["first"]), int(row["stop"])
        else:
            raise ValueError(f"around must be 'tss' or 'gene', not {around!r}")
        dosages, table = self._cis_contig(row["file"])
        variants = table.iloc[lo:hi].reset_index(drop=True).assign(chrom=row["chrom"])
        return CisGenotypes(
            gene_id, self.cis_window, variants[["variant_id", "chrom", "pos", "ref", "alt"]], dosages[lo:hi]
        )

    def _cis_contig(self, stem: str) -> tuple[np.ndarray, pd.DataFrame]:
        """One contig's (variants, samples) memmapped dosages and variant table, opened once."""
        cache = self.__dict__.setdefault("_cis_cache", {})
        if stem not in cache:
            base = self.path / "cis" / stem
            with np.load(f"{base}.variants.npz", allow_pickle=False) as z:
                table = pd.DataFrame(
                    {k: z[k].astype(object) if k != "pos" else z[k] for k in ("variant_id", "pos", "ref", "alt")}
                )
            cache[stem] = (np.load(f"{base}.dosages.npy", mmap_mode="r"), table)
        return cache[stem]

    @cached_property
    def samples(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "samples.tsv", sep="\t", dtype={"sample_id": str})

    @property
    def sample_ids(self) -> list[str]:
        return list(self.samples["sample_id"])

    @property
    def folds(self) -> np.ndarray:
        """(samples,) int fold of each sample, 0..K-1."""
        return self.samples["fold"].to_numpy()

    @cached_property
    def genes(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "genes.tsv", sep="\t", dtype={"gene_id": str, "gene_name": str, "chrom": str})

    @property
    def gene_ids(self) -> list[str]:
        return list(self.genes["gene_id"])

    @cached_property
    def gene_names(self) -> pd.Series:
        """gene_id -> gene_name: the annotation's name, or the id where it gave none (and for
        every gene of a study written before genes.tsv had the column)."""
        ids = self.genes["gene_id"]
        names = self.genes["gene_name"] if "gene_name" in self.genes.columns else ids
        return pd.Series(names.fillna(ids).to_numpy(dtype=object), index=ids.to_numpy(), name="gene_name")

    @cached_property
    def expression(self) -> pd.DataFrame:
        """(genes, samples) float64, index gene_id, columns sample_id in study order."""
        df = pd.read_csv(self.path / "expression.tsv", sep="\t", index_col=0, dtype={0: str})
        df.index = df.index.astype(str)
        return df

    @cached_property
    def covariates(self) -> pd.DataFrame | None:
        """(covariates, samples) float64, or None when the study has no covariates."""
        path = self.path / "covariates.tsv"
        if not path.exists():
            return None
        df = pd.read_csv(path, sep="\t", index_col=0)
        df.index = df.index.astype(str)
        return df

    def gene(self, gene_id: str) -> GeneData:
        path = self.path / "genes" / gene_file_name(gene_id)
        if not path.exists():
            raise StudyError(f"gene {gene_id} is not in this study", path=self.path)
        return read_gene(path, gene_id)

    def gene_info(self, gene_id: str) -> pd.Series:
        """The gene's row of genes.tsv."""
        rows = self.genes[self.genes["gene_id"] == gene_id]
        if rows.empty:
            raise StudyError(f"gene {gene_id} is not in this study", path=self.path)
        return rows.iloc[0]

    # -- what the study holds, for methods that need it ---------------------------------------
    @property
    def has_embeddings(self) -> bool:
        return any((self.path / "embeddings").glob("*/info.json"))

    def require(self, needs, method: str) -> None:
        """Refuse, naming the method and what to do, when the study lacks what it needs."""
        for need in needs:
            if need == "sequence":
                self.require_sequence(method)
            if need == "embeddings" and not self.has_embeddings:
                raise StudyError(
                    f"{method} needs embeddings and the study has none",
                    path=self.path / "embeddings",
                    hint=f"run `hapexpr embed {self.path}` first",
                )
