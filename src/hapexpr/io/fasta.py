"""Reference FASTA access: contig lengths, name matching and padded, upper-case fetches.

Wraps pyfaidx (the field's indexed FASTA reader) rather than re-implementing ``.fai`` parsing.
"""

from __future__ import annotations

import re
from pathlib import Path

from hapexpr.errors import InputError

_CHR_PREFIX = re.compile(r"^chr", re.IGNORECASE)
_EXCERPT = re.compile(r"^(?P<chrom>.+):(?P<start>\d+)-(?P<end>\d+)$")


def _canonical_contig(name: str) -> str:
    """Contig name without a ``chr`` prefix, mitochondria as ``M`` (``chrM`` == ``MT`` == ``M``)."""
    bare = _CHR_PREFIX.sub("", name)
    return "M" if bare.upper() in {"M", "MT"} else bare


def resolve_contig(chrom: str, contigs) -> str | None:
    """Match ``chrom`` to one of ``contigs``: exactly, else ignoring a ``chr`` prefix.

    Returns ``None`` when nothing matches, and also when the prefix-free match is ambiguous
    (e.g. both ``7`` and ``chr7`` exist but ``Chr7`` was asked for) so a wrong guess is never made.
    """
    contigs = list(contigs)
    if chrom in contigs:
        return chrom
    want = _canonical_contig(chrom)
    hits = [c for c in contigs if _canonical_contig(c) == want]
    return hits[0] if len(hits) == 1 else None


class Reference:
    """An indexed reference FASTA; creates the ``.fai`` beside it when missing.

    ``contigs`` maps contig name -> length (bp). ``fetch`` is 1-based inclusive, returns
    upper-case bytes and pads positions outside the contig with ``N`` so that a window at a
    contig edge always has the length asked for.

    A record named ``CHR:START-END`` whose length is END-START+1 (what ``samtools faidx REF
    CHR:START-END`` writes, e.g. HISAT2's ``22:20000001-21000000``) is an excerpt of CHR: it
    answers for CHR in CHR's own coordinates, and positions outside it read as ``N``.
    ``span(name)`` gives the 1-based inclusive stretch of the contig a record covers.
    """

    def __init__(self, path: str | Path) -> None:
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("reference FASTA not found", path=self.path, hint="check the --fasta path")
        with open(self.path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            raise InputError(
                "the reference FASTA is gzip-compressed, which hapexpr does not read",
                path=self.path,
                hint=f"decompress it (`gunzip -c {self.path} > reference.fa`) and pass the .fa file",
            )
        fai = Path(str(self.path) + ".fai")
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=True)
        except PermissionError as exc:
            raise InputError(
                f"the FASTA has no index ({fai.name}) and one cannot be created there ({exc.strerror})",
                path=self.path,
                hint=f"run `samtools faidx {self.path}` where you can write, or copy the FASTA to a writable folder",
            ) from None
        except (pyfaidx.FastaIndexingError, pyfaidx.IndexNotFoundError, ValueError, OSError, RuntimeError) as exc:
            # pyfaidx raises a bare RuntimeError for some malformed records (e.g. blank lines only)
            raise InputError(
                f"cannot index the reference FASTA ({str(exc).strip() or type(exc).__name__})",
                path=self.path,
                hint=(
                    "every sequence must have lines of one width (except its last) and unique names; "
                    f"`samtools faidx {self.path}` reports the first problem"
                ),
            ) from None
        self.contigs: dict[str, int] = {name: int(rec.rlen) for name, rec in self._fasta.faidx.index.items()}
        if not self.contigs:
            raise InputError("the reference FASTA holds no sequences", path=self.path)
        # record name -> (contig it is an excerpt of, 1-based start of the excerpt on that contig)
        self._excerpts: dict[str, tuple[str, int]] = {}
        for name, length in self.contigs.items():
            m = _EXCERPT.match(name)
            if m and int(m["end"]) - int(m["start"]) + 1 == length and m["chrom"] not in self.contigs:
                self._excerpts[name] = (m["chrom"], int(m["start"]))

    def is_excerpt(self, name: str) -> bool:
        """True when record ``name`` is a ``CHR:START-END`` excerpt rather than a whole contig."""
        return name in self._excerpts

    def span(self, name: str) -> tuple[int, int]:
        """1-based inclusive (first, last) position of the contig that record ``name`` holds."""
        offset = self._excerpts[name][1] - 1 if name in self._excerpts else 0
        return offset + 1, offset + self.contigs[name]

    def resolve(self, chrom: str) -> str | None:
        """This FASTA's name for ``chrom`` (``chr7`` <-> ``7``), or ``None`` if it has none;
        an excerpt record ``CHR:START-END`` answers for CHR when no whole CHR is present."""
        name = resolve_contig(chrom, self.contigs)
        if name is None and self._excerpts:
            hit = resolve_contig(chrom, [c for c, _ in self._excerpts.values()])
            names = [n for n, (c, _) in self._excerpts.items() if c == hit]
            name = names[0] if len(names) == 1 else None
        return name

    def _name(self, chrom: str) -> str:
        name = self.resolve(chrom)
        if name is None:
            shown = ", ".join(list(self.contigs)[:8]) + (", ..." if len(self.contigs) > 8 else "")
            raise InputError(
                f"contig {chrom!r} is not in the reference (it has {shown})",
                path=self.path,
                hint="use a FASTA of the same genome build as the VCF and annotation",
            )
        return name

    def fetch(self, chrom: str, start: int, end: int) -> bytes:
        """Upper-case bases of ``chrom:start-end`` (1-based inclusive), ``N`` outside the contig.

        Always returns ``end - start + 1`` bytes.
        """
        if end < start:
            raise ValueError(f"end {end} < start {start}")
        name = self._name(chrom)
        length = self.contigs[name]
        if name in self._excerpts:  # to the record's own coordinates
            shift = self._excerpts[name][1] - 1
            start, end = start - shift, end - shift
        lo, hi = max(start, 1), min(end, length)
        body = b""
        if lo <= hi:
            raw = self._fasta.faidx.fetch(name, lo, hi)
            seq = str(getattr(raw, "seq", raw))
            try:
                body = seq.encode("ascii").upper()
            except UnicodeEncodeError as exc:
                raise InputError(
                    f"{name}:{lo}-{hi} holds a non-ASCII character ({seq[exc.start]!r}) where bases belong",
                    path=self.path,
                    record=f"{name}:{lo + exc.start}",
                    hint="a FASTA holds only IUPAC letters; fix or re-create the file",
                ) from None
            if len(body) != hi - lo + 1:
                raise InputError(
                    f"{name}:{lo}-{hi} came back {len(body)} bp long instead of {hi - lo + 1}",
                    path=self.path,
                    hint=f"the index is stale or the file is damaged; delete {self.path}.fai and run again",
                )
        left = b"N" * max(0, min(end, 0) - start + 1)  # positions < 1
        right = b"N" * max(0, end - max(start, length + 1) + 1)  # positions > length
        return left + body + right

    def close(self) -> None:
        self._fasta.close()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
