"""Personal haplotype sequences, byte-identical to ``bcftools consensus -H 1pIu`` / ``-H 2pIu``.

The inner loop of ``prepare``: people share a handful of haplotypes in a few-kb window, so the
(sample, haplotype) allele patterns are deduplicated first (:func:`unique_haplotypes`) and each
DISTINCT haplotype is built once (:func:`build_haplotypes`) with one pass over its ALT alleles:
reference stretches are copied as slices, never base by base.

The rules of bcftools 1.16 ``consensus`` (consensus.c ``apply_variant``) reproduced here, for a
region FASTA (``samtools faidx ref.fa CHR:START-END``) and one haplotype:

- only records with START <= POS <= END are used; one that starts before START (a deletion
  reaching into the region) is ignored, one that runs past END is cut at END (its REF to the bases
  left, its ALT to as many bases when it is longer);
- a record whose allele on this haplotype is REF changes nothing and protects nothing;
- a record starting inside the last applied record is skipped ("overlaps with another variant"),
  except an indel whose first base equals its REF's (``trim_beg``) starting exactly on the last
  base of the previous applied record, when that record was not an insertion; that indel keeps
  the (possibly already changed) first base;
- ALT is written in the case of the sequence at its first base (upper case for our references).

See docs/haplotypes.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError
from hapexpr.io.atomic import atomic_open
from hapexpr.io.fasta import Reference
from hapexpr.io.vcf import VcfReader


def unique_haplotypes(genotypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate the haplotypes of a cohort.

    genotypes: (variants, samples, 2) int8, 0 REF / 1 ALT.
    Returns ``alleles`` (unique, variants) bool, the ALT alleles of each distinct haplotype sorted
    lexicographically (REF < ALT, so the all-REF haplotype comes first when present), and
    ``index`` (samples, 2) int32 with ``alleles[index[s, h]] == genotypes[:, s, h]``.
    """
    genotypes = np.asarray(genotypes)
    if genotypes.ndim != 3 or genotypes.shape[2] != 2:
        raise ValueError(f"genotypes must be (variants, samples, 2), got {genotypes.shape}")
    if genotypes.size and (genotypes.min() < 0 or genotypes.max() > 1):
        raise ValueError("genotypes must be 0 (REF) or 1 (ALT); missing calls are not allowed here")
    n_variants, n_samples, _ = genotypes.shape
    # (samples * 2, variants): row 2*s + h is haplotype h of sample s
    haps = np.ascontiguousarray(genotypes.transpose(1, 2, 0).reshape(n_samples * 2, n_variants), dtype=bool)
    if n_samples == 0:
        return np.zeros((0, n_variants), dtype=bool), np.zeros((0, 2), dtype=np.int32)
    if n_variants == 0:
        return np.zeros((1, 0), dtype=bool), np.zeros((n_samples, 2), dtype=np.int32)
    # Rows packed 8 variants to a byte sort in the same (lexicographic) order as the bool rows,
    # with 8x less to compare: np.unique over rows was a hot spot at 196,608 bp windows.
    packed = np.packbits(haps, axis=1)
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return haps[first], inverse.reshape(n_samples, 2).astype(np.int32)


@dataclass(frozen=True)
class Haplotype:
    """One consensus sequence over a region.

    sequence: the bases bcftools would write (without line breaks).
    applied: (variants,) bool, the ALT alleles actually written, after bcftools' overlap rules
        (an ALT allele the haplotype carries can still be skipped).
    start: 1-based reference position of the region's first base.
    """

    sequence: bytes
    applied: np.ndarray
    start: int = 1
    # (applied records, 5) int64: region offset o, REF length r, sequence offset idx, bytes kept
    # from what was there, ALT length; replayed lazily by offset_of.
    _edits: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.int64), repr=False, compare=False)
    _length: int = field(default=0, repr=False, compare=False)

    @cached_property
    def _origins(self) -> np.ndarray:
        """(len(sequence),) int64: the region offset each output base comes from, non-decreasing.

        Unchanged bases come from themselves; base j of an ALT written by a record at offset o
        with REF length r comes from o + min(j, r - 1) (inserted bases from the last REF base);
        a base kept from before keeps its origin.
        """
        grow = int(np.clip(self._edits[:, 4] - self._edits[:, 1], 0, None).sum()) if len(self._edits) else 0
        origins = np.empty(self._length + grow + 1, dtype=np.int64)
        n, cur = 0, 0
        for o, r, idx, keep, alen in self._edits.tolist():
            if o + r > cur:
                origins[n : n + o + r - cur] = np.arange(cur, o + r)
                n, cur = n + o + r - cur, o + r
            j = np.arange(keep, alen)
            origins[idx + keep : idx + alen] = o + np.minimum(j, r - 1)
            n = idx + alen
        tail = self._length - cur
        origins[n : n + tail] = np.arange(cur, self._length)
        return origins[: n + tail]

    def offset_of(self, ref_pos: int) -> int:
        """0-based offset in ``sequence`` of the 1-based reference position ``ref_pos``.

        A base removed by a deletion maps to the offset of the first base after the deleted
        stretch; bases inserted after a position come after it (``offset_of(p + 1)`` is past the
        insertion). Positions outside the region extrapolate linearly (negative before it).
        """
        x = int(ref_pos) - self.start
        if x < 0:
            return x
        if x >= self._length:
            return len(self.sequence) + x - self._length
        edits = self._edits
        k = int(np.searchsorted(edits[:, 0], x, side="right")) - 1
        if k < 0:
            return x
        if x >= edits[k, 0] + edits[k, 1]:  # past every record that starts at or before x
            return x + int(self._shift[k])
        return int(np.searchsorted(self._origins, x, side="left"))

    @cached_property
    def _shift(self) -> np.ndarray:
        """(applied records,) net length change after each applied record."""
        return np.cumsum(self._edits[:, 4] - self._edits[:, 1])


def _is_indel(ref: str, alt: str) -> bool:
    """htslib 1.16 ``bcf_set_variant_type(ref, alt) & VCF_INDEL`` for one ALT (case-insensitive)."""
    if len(ref) == 1 and len(alt) == 1:
        return False
    if alt.startswith("<") or alt == "*":
        return False
    r_up, a_up = ref.upper(), alt.upper()
    p = 0
    while p < len(r_up) and p < len(a_up) and r_up[p] == a_up[p]:
        p += 1
    if p == len(r_up) and p < len(a_up):
        return a_up[p] not in "[]"
    if p == len(a_up) and p < len(r_up):
        return True
    if p == len(r_up) and p == len(a_up):
        return False
    re_, ae = len(r_up) - 1, len(a_up) - 1
    while re_ > p and ae > p and r_up[re_] == a_up[ae]:
        re_ -= 1
        ae -= 1
    if ae == p:
        return re_ != p and r_up[re_] == a_up[ae]
    if re_ == p:
        return r_up[re_] == a_up[ae]
    return False


def build_haplotypes(reference: bytes, start: int, pos, ref, alt, alleles: np.ndarray) -> list[Haplotype]:
    """Apply each haplotype's ALT alleles to the reference of a region, as bcftools consensus does.

    reference: bases of the region, the first at 1-based position ``start`` (case is kept: ALT
        alleles take the case of the base they start on, as in bcftools).
    pos, ref, alt: (variants,) 1-based positions and alleles, sorted by position (VCF order).
    alleles: (haplotypes, variants) bool, True where the haplotype carries ALT.
    Returns one :class:`Haplotype` per row of ``alleles``.
    """
    reference = bytes(reference)
    length = len(reference)
    pos = np.asarray(pos, dtype=np.int64)
    alleles = np.asarray(alleles, dtype=bool)
    if alleles.ndim != 2 or alleles.shape[1] != len(pos):
        raise ValueError(f"alleles must be (haplotypes, {len(pos)}), got {alleles.shape}")
    n_variants = len(pos)
    # Per-variant facts computed once, not per haplotype.
    plan: list[tuple | None] = []
    for k in range(n_variants):
        o = int(pos[k]) - start
        if o < 0 or o >= length:
            plan.append(None)  # bcftools: before the region is ignored, after it never read
            continue
        ref_k, alt_k = str(ref[k]), str(alt[k])
        r = len(ref_k)
        alt_cut = alt_k
        if r > length - o:  # runs past the region's end: REF cut to what is left, ALT no longer
            r = length - o
            alt_cut = alt_k[:r] if len(alt_k) > r else alt_k
        if reference[o : o + r].upper() != ref_k[:r].upper().encode():
            raise InputError(
                f"REF {ref_k} does not match the reference ({reference[o : o + r].decode()})",
                record=f"{pos[k]} {ref_k}>{alt_k}",
                hint="normalise the VCF against this FASTA with `bcftools norm --check-ref e -f REF.fa`",
            )
        trim_beg = _is_indel(ref_k, alt_k) and ref_k[0] == alt_k[0]
        plan.append((o, r, trim_beg, alt_cut.upper().encode(), alt_cut.lower().encode(), ref_k.encode()[:1]))

    # Per-variant arrays for the fast path: offset, REF length (cut at the region end), ALT
    # (upper case), ALT length, and whether an indel keeps its shared first base.
    live = np.array([step is not None for step in plan], dtype=bool)
    offsets = np.array([step[0] if step else 0 for step in plan], dtype=np.int64)
    ref_lens = np.array([step[1] if step else 0 for step in plan], dtype=np.int64)
    alts = [step[3] if step else b"" for step in plan]
    alt_lens = np.array([len(a) for a in alts], dtype=np.int64)
    trims = np.array([bool(step and step[2]) for step in plan], dtype=bool)
    # An ALT takes the case of the base it starts on: with no lower-case base that is upper case.
    upper = reference == reference.upper()
    haplotypes = []
    for row in alleles:
        carried = np.flatnonzero(row & live)
        o, r = offsets[carried], ref_lens[carried]
        if upper and np.all(o[1:] > o[:-1] + r[:-1] - 1):
            haplotypes.append(_build_disjoint(reference, start, carried, o, r, alts, alt_lens, trims, len(plan)))
        else:
            haplotypes.append(_build_one(reference, start, plan, carried))
    return haplotypes


def _build_disjoint(
    reference: bytes,
    start: int,
    carried: np.ndarray,
    o: np.ndarray,
    r: np.ndarray,
    alts: list[bytes],
    alt_lens: np.ndarray,
    trims: np.ndarray,
    n_variants: int,
) -> Haplotype:
    """:func:`_build_one` for the common case, as one join of reference stretches and ALTs.

    Exact when the carried records do not overlap and the reference is upper case: then no record
    is skipped, none starts on a base another record changed (so bcftools' ``keep`` only ever
    keeps an indel's shared first base, equal to the reference's), and every ALT is written upper
    case. At 196,608 bp nearly every haplotype is distinct, and the record-by-record bytearray
    edits of :func:`_build_one` were the hot spot of ``prepare`` (profiled in RESULTS.md).
    """
    mv = memoryview(reference)
    starts = [0, *(o + r).tolist()]
    ends = [*o.tolist(), len(reference)]
    pieces: list = [None] * (2 * len(carried) + 1)
    pieces[0::2] = [mv[a:b] for a, b in zip(starts, ends)]
    pieces[1::2] = [alts[k] for k in carried.tolist()]
    alen = alt_lens[carried]
    shift = np.concatenate(([0], np.cumsum(alen - r)[:-1]))
    keep = ((alen <= r) & trims[carried]).astype(np.int64)
    applied = np.zeros(n_variants, dtype=bool)
    applied[carried] = True
    return Haplotype(
        sequence=b"".join(pieces),
        applied=applied,
        start=start,
        _edits=np.column_stack([o, r, o + shift, keep, alen]).reshape(-1, 5),
        _length=len(reference),
    )


def _build_one(reference: bytes, start: int, plan: list, carried: np.ndarray) -> Haplotype:
    """One haplotype: the ALT alleles at ``carried`` (indices into ``plan``) applied in order."""
    out = bytearray()
    cur = 0  # region offsets < cur have been copied (or replaced) into ``out``
    mod_off = 0  # len(out) - cur: net length change so far
    frz = -1  # last region offset touched by an applied record (bcftools fa_frz_pos)
    prev_base_pos = -1
    prev_is_insert = False
    applied = np.zeros(len(plan), dtype=bool)
    edits = []
    for k in carried.tolist():
        step = plan[k]
        if step is None:
            continue
        o, r, trim_beg, alt_up, alt_low, ref0 = step
        if o <= frz and (o < frz or not trim_beg or prev_is_insert):
            continue  # "overlaps with another variant, skipping"
        idx = o + mod_off
        if o + r > cur:
            out += reference[cur : o + r]
            cur = o + r
        first = out[idx]
        alt = alt_low if 97 <= first <= 122 else alt_up
        alen = len(alt)
        if alen <= r:  # deletion or same length: keeps the first base of an indel
            keep = 1 if trim_beg else 0
            prev_base_pos = o + r - 1
            prev_is_insert = False
        else:  # insertion: keeps the first base only when it was changed by the previous record
            keep = 1 if (o == prev_base_pos and alt[:1] == ref0) else 0
            prev_base_pos = o
            prev_is_insert = True
        del out[idx + keep :]
        out += alt[keep:]
        mod_off += alen - r
        frz = o + r - 1
        applied[k] = True
        edits.append((o, r, idx, keep, alen))
    out += reference[cur:]
    return Haplotype(
        sequence=bytes(out),
        applied=applied,
        start=start,
        _edits=np.asarray(edits, dtype=np.int64).reshape(-1, 5),
        _length=len(reference),
    )


def parse_region(region: str) -> tuple[str, int, int]:
    """``CHR:START-END`` (1-based inclusive, commas allowed) -> (chrom, start, end)."""
    text = region.strip().replace(",", "")
    chrom, sep, span = text.rpartition(":")
    start_s, dash, end_s = span.partition("-")
    if not sep or not chrom or not dash or not start_s.isdigit() or not end_s.isdigit():
        raise InputError(
            "cannot read the region",
            record=f"--region {region}",
            hint="write it as CHR:START-END, 1-based and inclusive, e.g. chr7:5529000-5531000",
        )
    start, end = int(start_s), int(end_s)
    if start < 1 or end < start:
        raise InputError(f"the region must have 1 <= START <= END (got {start}-{end})", record=f"--region {region}")
    return chrom, start, end


def _wrap(sequence: bytes, width: int = 60) -> bytes:
    """FASTA body lines of ``width`` bases, as bcftools writes them."""
    if not sequence:
        return b""
    return b"\n".join(sequence[i : i + width] for i in range(0, len(sequence), width)) + b"\n"


def haplotypes_fasta(
    vcf,
    fasta,
    region: str,
    *,
    samples: list[str] | None = None,
    out: Path | None = None,
    allow_unphased: bool = False,
) -> None:
    """Write both haplotypes of each sample over ``region`` as FASTA records SAMPLE_1, SAMPLE_2.

    Sequences equal ``samtools faidx FASTA REGION | bcftools consensus -H 1pIu|2pIu -s SAMPLE VCF``
    (60 bases a line); written atomically to ``out``, or to stdout.
    """
    chrom, start, end = parse_region(region)
    reference = Reference(fasta)
    ref_chrom = reference.resolve(chrom)
    if ref_chrom is None:
        reference._name(chrom)  # raises the error that lists the FASTA's contigs
    reader = VcfReader(vcf, samples=samples, allow_unphased=allow_unphased)
    vcf_chrom = reader.resolve(chrom)
    if vcf_chrom is None:
        shown = ", ".join(reader.contigs[:8]) + (", ..." if len(reader.contigs) > 8 else "")
        raise InputError(
            f"the VCF has no contig matching {chrom!r} (it has {shown or 'none'})",
            path=vcf,
            hint="check the region's contig, or that the VCF and FASTA describe the same genome build",
        )
    variants = reader.fetch(vcf_chrom, start, end, reference=reference)
    sequence = reference.fetch(ref_chrom, start, end)
    alleles, index = unique_haplotypes(variants.genotypes)
    built = build_haplotypes(sequence, start, variants.pos, variants.ref, variants.alt, alleles)
    bodies = [_wrap(h.sequence) for h in built]

    def write(fh) -> None:
        for s, sample in enumerate(reader.samples):
            for h in range(2):
                fh.write(f">{sample}_{h + 1}\n".encode())
                fh.write(bodies[index[s, h]])

    if out is None:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        with atomic_open(out, "wb") as fh:
            write(fh)
