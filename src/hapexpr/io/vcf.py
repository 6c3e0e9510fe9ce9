"""Phased genotypes of biallelic records from a bgzipped, indexed VCF/BCF (cyvcf2).

Every record a region returns is validated at the boundary, so later stages can trust the arrays:
biallelic, sequence (not symbolic) alleles, diploid, no missing calls, phased heterozygotes,
sorted, and (given the reference) REF matching the FASTA. Each problem is one
:class:`~hapexpr.errors.InputError` naming the file, the record and the fix.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError
from hapexpr.io.fasta import Reference, resolve_contig

# The empty block bgzip writes last; htslib only warns when it is missing and then reads a
# truncated file as if it ended early, so its absence is an error here.
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_BASES = re.compile(r"^[ACGTNacgtn]+$")
_NORM_HINT = "split them with `bcftools norm -m- -f REF.fa IN.vcf.gz -Oz -o OUT.vcf.gz` and index the result"


@dataclass(frozen=True)
class Variants:
    """Biallelic records of one region, in VCF order.

    chrom: the VCF's name of the contig.
    pos: (variants,) int64, 1-based. ref, alt: (variants,) str, as written in the VCF.
    ids: (variants,) str; ``CHROM_POS_REF_ALT`` where the VCF's ID is ``.``.
    genotypes: (variants, samples, 2) int8, 0 REF / 1 ALT, in the order written in GT.
    phased: (variants, samples) bool, GT written with ``|`` (haploid-free, so per genotype).
    """

    chrom: str
    pos: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    ids: np.ndarray
    genotypes: np.ndarray
    phased: np.ndarray

    def __len__(self) -> int:
        return len(self.pos)


def _check_container(path: Path) -> None:
    """Refuse files htslib cannot query by region, or would read short without saying so."""
    if not path.is_file():
        raise InputError("VCF not found", path=path, hint="check the --vcf path")
    with open(path, "rb") as fh:
        head = fh.read(18)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - len(_BGZF_EOF)))
        tail = fh.read()
    index_hint = f"compress and index it: `bcftools view {path} -Oz -o OUT.vcf.gz && bcftools index -t OUT.vcf.gz`"
    if head[:2] != b"\x1f\x8b":
        raise InputError("the VCF is not bgzip-compressed", path=path, hint=index_hint)
    if not (head[3] & 4 and head[12:14] == b"BC"):
        raise InputError(
            "the VCF is gzip- but not bgzip-compressed, so it cannot be indexed",
            path=path,
            hint=f"recompress it: `zcat {path} | bgzip > OUT.vcf.gz && tabix -p vcf OUT.vcf.gz`",
        )
    if tail != _BGZF_EOF:
        raise InputError(
            "the VCF is truncated (no bgzip end-of-file block)",
            path=path,
            hint="copy or download it again; a complete bgzip file ends with an empty block",
        )
    indexes = [Path(str(path) + ext) for ext in (".tbi", ".csi") if Path(str(path) + ext).is_file()]
    if not indexes:
        raise InputError(
            "the VCF has no index (.tbi or .csi beside it)",
            path=path,
            hint=f"index it: `tabix -p vcf {path}` (or `bcftools index {path}` for BCF)",
        )
    if all(i.stat().st_mtime < path.stat().st_mtime for i in indexes):
        # A stale index silently returns the wrong records (or none) for a region query.
        raise InputError(
            f"the index {indexes[0].name} is older than the VCF, so region queries may miss records",
            path=path,
            hint=f"re-index it: `tabix -f -p vcf {path}` (or `bcftools index -f {path}`); if the two were only "
            "copied in the wrong order, `touch` the index",
        )


def _shown(name: str, p: int, ref: str, alt_list) -> str:
    """How an error names a record: ``chr1:123 A>G``."""
    return f"{name}:{p} {ref}>{','.join(alt_list) or '.'}"


class VcfReader:
    """Region queries on a phased, bgzipped and indexed VCF/BCF.

    samples: the requested samples in the order requested (default: the file's order).
    contigs: contig names known to the header (or, lacking ##contig lines, the index).
    allow_unphased: accept unphased heterozygous genotypes and use their alleles in the order
        written (like ``bcftools consensus -H 1`` / ``-H 2``, not the IUPAC codes of ``-H 1pIu``).
    """

    def __init__(self, path, *, samples: list[str] | None = None, allow_unphased: bool = False) -> None:
        import cyvcf2

        self.path = Path(path)
        self.allow_unphased = allow_unphased
        _check_container(self.path)
        try:
            self._vcf = cyvcf2.VCF(str(self.path), gts012=False, lazy=True)
        except Exception as exc:  # cyvcf2 raises bare Exception/OSError on unreadable headers
            raise InputError(
                f"cannot read the VCF header ({exc})", path=self.path, hint="check it with `bcftools view -h`"
            ) from None
        file_samples = list(self._vcf.samples)
        if not file_samples:
            raise InputError("the VCF has no samples (no genotype columns)", path=self.path)
        if samples is None:
            samples = file_samples
        samples = list(samples)
        dupes = sorted({s for s in samples if samples.count(s) > 1})
        if dupes:
            raise InputError(f"samples requested twice: {', '.join(dupes[:5])}", path=self.path)
        missing = [s for s in samples if s not in set(file_samples)]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise InputError(
                f"samples not in the VCF: {', '.join(missing[:5])}{more}",
                path=self.path,
                hint="list the VCF's samples with `bcftools query -l`",
            )
        if not samples:
            raise InputError("no samples requested", path=self.path)
        if samples != file_samples:
            self._vcf.set_samples(samples)
        # cyvcf2 keeps the file's order for a subset; this puts columns in the requested order
        order = {s: i for i, s in enumerate(self._vcf.samples)}
        self._columns = np.array([order[s] for s in samples], dtype=np.int64)
        self.samples: list[str] = samples
        self.contigs: list[str] = list(self._vcf.seqnames)

    def resolve(self, chrom: str) -> str | None:
        """This VCF's name for ``chrom`` (``chr7`` <-> ``7``), or ``None`` if it has none."""
        return resolve_contig(chrom, self.contigs)

    def contig_length(self, name: str) -> int | None:
        """Length of contig ``name`` from the header's ``##contig`` lines, or None if not given."""
        try:
            lengths = dict(zip(self._vcf.seqnames, self._vcf.seqlens))
        except Exception:  # cyvcf2 raises when the header has no ##contig lengths
            return None
        return int(lengths[name]) if lengths.get(name, 0) > 0 else None

    def _fail(self, message: str, record: str, hint: str | None = None) -> InputError:
        return InputError(message, path=self.path, record=record, hint=hint)

    def fetch(self, chrom: str, start: int, end: int, *, reference: Reference | None = None) -> Variants:
        """Validated records with ``start <= POS <= end`` (1-based inclusive).

        A record starting before ``start`` (e.g. a deletion reaching into the region) is left out,
        as ``bcftools consensus`` ignores it on a region FASTA. Records with no ALT (``.``) carry
        no variation and are left out. Raises :class:`InputError` on the first bad record.
        """
        name = self.resolve(chrom) if isinstance(chrom, str) else None
        if name is None:
            raise self._fail(
                f"no contig matching {chrom!r} in the VCF",
                f"{chrom}:{start}-{end}",
                "check that the VCF and the FASTA/annotation use the same genome build",
            )
        pos, refs, alts, ids, arrays = [], [], [], [], []
        last = f"{name}:{start}-{end} (before its first record)"
        try:
            with warnings.catch_warnings():
                # cyvcf2 warns "no intervals found" for an empty region: that is zero variants.
                warnings.simplefilter("ignore")
                records = iter(self._vcf(f"{name}:{start}-{end}"))
            for rec in records:
                p = rec.POS
                if p < start:
                    continue
                row = self._record(rec, name, p, pos)
                last = f"{name}:{p}"
                if row is None:
                    continue
                ref, alt, rid, arr = row
                pos.append(p), refs.append(ref), alts.append(alt), ids.append(rid), arrays.append(arr)
        except InputError:
            raise
        except Exception as exc:  # htslib parse errors surface as bare Exceptions in cyvcf2
            raise self._fail(
                f"a malformed record ({exc})",
                f"the record after {last}",
                "each data line needs 8 fixed columns, FORMAT and one column per sample; "
                "`bcftools view` on the region shows the first bad line",
            ) from None
        n_samples = len(self.samples)
        genotypes, phased = self._genotypes(arrays, name, pos, refs, alts)
        variants = Variants(
            chrom=name,
            pos=np.asarray(pos, dtype=np.int64),
            ref=np.asarray(refs, dtype=object),
            alt=np.asarray(alts, dtype=object),
            ids=np.asarray(ids, dtype=object),
            genotypes=genotypes if arrays else np.zeros((0, n_samples, 2), np.int8),
            phased=phased if arrays else np.zeros((0, n_samples), bool),
        )
        if reference is not None and len(variants):
            self._check_ref(variants, reference)
        return variants

    def _record(self, rec, name: str, p: int, pos: list):
        """Check one record's alleles; returns (ref, alt, id, GT array (file samples, 3)) or
        None for a record without ALT. Genotypes are checked for all records at once."""
        ref, alt_list = rec.REF, rec.ALT
        if pos and p < pos[-1]:
            raise self._fail(
                f"records are not sorted (POS {p} after {pos[-1]})",
                _shown(name, p, ref, alt_list),
                "sort and index it: `bcftools sort IN.vcf.gz -Oz -o OUT.vcf.gz && bcftools index -t OUT.vcf.gz`",
            )
        if not alt_list:
            return None  # ALT '.': a monomorphic site; bcftools consensus ignores it too
        if len(alt_list) > 1:
            raise self._fail(
                "multi-allelic record; hapexpr reads biallelic records only", _shown(name, p, ref, alt_list), _NORM_HINT
            )
        alt = alt_list[0]
        if not _BASES.match(alt):
            raise self._fail(
                f"ALT {alt!r} is symbolic or not made of A, C, G, T, N",
                _shown(name, p, ref, alt_list),
                'keep sequence-resolved SNVs and indels only, e.g. `bcftools view -e \'ALT~"<.*>" || ALT="*"\'`',
            )
        if not _BASES.match(ref):
            raise self._fail(f"REF {ref!r} is not made of A, C, G, T, N", _shown(name, p, ref, alt_list))
        try:
            arr = rec.genotype.array()
        except Exception:
            arr = None
        if arr is None:
            raise self._fail(
                "the record has no GT genotypes",
                _shown(name, p, ref, alt_list),
                "hapexpr needs phased GT for every sample",
            )
        if arr.shape[1] != 3:
            raise self._fail(
                "genotypes that are not diploid",
                _shown(name, p, ref, alt_list),
                "hapexpr needs two alleles per sample (e.g. 0|1)",
            )
        rid = rec.ID or f"{name}_{p}_{ref}_{alt}"
        return ref, alt, rid, arr

    def _genotypes(self, arrays: list, name: str, pos: list, refs: list, alts: list) -> tuple[np.ndarray, np.ndarray]:
        """(variants, samples, 2) int8 alleles and (variants, samples) phase flags of the requested
        samples, checked in one pass over all records (per record this was the hot spot of
        reading a 196 kb window); an error names the first record at fault."""
        if not arrays:
            return np.zeros((0, len(self.samples), 2), np.int8), np.zeros((0, len(self.samples)), bool)
        gt = np.stack(arrays)[:, self._columns]  # (variants, samples, 3): allele, allele, phased
        alleles = gt[:, :, :2]

        def first(bad: np.ndarray) -> tuple[int, np.ndarray]:
            k = int(np.flatnonzero(bad.any(axis=1))[0])
            return k, np.flatnonzero(bad[k])

        haploid = (alleles == -2).any(axis=2)
        if haploid.any():
            k, _ = first(haploid)
            raise self._fail(
                "genotypes that are not diploid",
                _shown(name, pos[k], refs[k], [alts[k]]),
                "hapexpr needs two alleles per sample (e.g. 0|1)",
            )
        missing = (alleles < 0).any(axis=2)
        if missing.any():
            k, who = first(missing)
            raise self._fail(
                f"missing genotypes ('.'), e.g. sample {', '.join(self.samples[i] for i in who[:3])}",
                _shown(name, pos[k], refs[k], [alts[k]]),
                "impute them (e.g. Beagle), or drop such records: `bcftools view -e 'GT=\"mis\"'`",
            )
        phased = gt[:, :, 2].astype(bool)
        unphased = ~phased & (alleles[:, :, 0] != alleles[:, :, 1])
        if unphased.any() and not self.allow_unphased:
            rows = np.flatnonzero(unphased.any(axis=1))[:3]
            named = [f"{name}:{pos[k]} sample {self.samples[int(np.flatnonzero(unphased[k])[0])]}" for k in rows]
            raise self._fail(
                "unphased heterozygous genotypes (written with '/'): " + "; ".join(named),
                named[0].split(" ")[0],
                "phase the VCF first (e.g. SHAPEIT5 or Beagle), or pass --allow-unphased to use the "
                "alleles in the order written",
            )
        return alleles.astype(np.int8), phased

    def _check_ref(self, variants: Variants, reference: Reference) -> None:
        """REF must match the FASTA (case-insensitive), as bcftools consensus requires."""
        ref_name = reference.resolve(variants.chrom)
        if ref_name is None:
            reference._name(variants.chrom)  # raises the error that lists the FASTA's contigs
        lo = int(variants.pos[0])
        hi = max(int(p) + len(r) - 1 for p, r in zip(variants.pos, variants.ref))
        bases = reference.fetch(ref_name, lo, hi)
        for p, r, a in zip(variants.pos.tolist(), variants.ref, variants.alt):
            got = bases[p - lo : p - lo + len(r)]
            if got != r.upper().encode():
                raise self._fail(
                    f"REF does not match the reference FASTA {reference.path} (which has {got.decode()})",
                    f"{variants.chrom}:{p} {r}>{a}",
                    "use the FASTA the VCF was called against, or fix REF with "
                    "`bcftools norm --check-ref s -f REF.fa` (or `--check-ref x` to drop such records)",
                )

    def close(self) -> None:
        self._vcf.close()

    def __enter__(self) -> VcfReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
