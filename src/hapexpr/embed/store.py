"""The embedding store: ``STUDY/embeddings/<fingerprint>/``, content-addressed by sequence hash.

Layout (documented in ``docs/embeddings.md``)::

    embeddings/<fingerprint>/info.json          model, weights hash, layer, bins, dim, window...
    embeddings/<fingerprint>/genes/<gene>.zarr  one zarr group per gene, rows in gene.sequences order
    embeddings/<fingerprint>/extra/<id>.zarr    sequences embedded on request (``hapexpr explain``)

Each group holds ``sha256`` (rows, 32) uint8, ``bins`` (rows, bins, dim) float16 and ``mean``
(rows, dim) float16. A group is written into a temporary directory and renamed into place, so it
is either whole or absent: a killed run leaves only temporary directories, removed by the next
run. One group per gene keeps the file count near ten per gene (about 10,000 for 1,000 genes)
rather than one per haplotype. Any row is found by the sha256 of its sequence through
:class:`HashIndex`, so a haplotype shared by two genes, or a gene whose haplotypes changed
after ``prepare`` was rerun, reuses what is already embedded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hapexpr.errors import StudyError
from hapexpr.io.atomic import OLD_DIR_PREFIX, TMP_DIR_PREFIX, atomic_dir, write_json
from hapexpr.study import gene_file_name

EMBEDDINGS_DIR = "embeddings"
INFO = "info.json"
STORE_VERSION = 1
CHUNK_ROWS = 64


def sequence_sha256(sequence: bytes) -> bytes:
    """32-byte sha256 digest of a haplotype sequence (upper-cased), the cache key."""
    return hashlib.sha256(bytes(sequence).upper()).digest()


def hashes_of(sequences: Sequence[bytes]) -> np.ndarray:
    """(rows, 32) uint8 digests of ``sequences``."""
    out = np.zeros((len(sequences), 32), dtype=np.uint8)
    for i, s in enumerate(sequences):
        out[i] = np.frombuffer(sequence_sha256(s), dtype=np.uint8)
    return out


def gene_group_name(gene_id: str) -> str:
    return gene_file_name(gene_id)[: -len(".npz")] + ".zarr"


def write_group(
    path: Path, hashes: np.ndarray, bins: np.ndarray, mean: np.ndarray, *, dtype: str = "float16", **attrs
) -> None:
    """Write one group atomically: into a temporary sibling directory, then renamed onto ``path``.

    hashes: (rows, 32) uint8; bins: (rows, bins, dim); mean: (rows, dim); stored as ``dtype``
    (the embedder's: float16 for language models, float32 where rounding would matter).
    """
    import zarr

    with atomic_dir(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        n = len(hashes)
        rows = max(1, min(n, CHUNK_ROWS))
        group.create_array("sha256", data=np.ascontiguousarray(hashes, dtype=np.uint8), chunks=(max(1, n), 32))
        b = group.create_array("bins", shape=bins.shape, dtype=dtype, chunks=(rows, *bins.shape[1:]))
        m = group.create_array("mean", shape=mean.shape, dtype=dtype, chunks=(rows, mean.shape[1]))
        if n:
            b[:] = bins.astype(dtype)
            m[:] = mean.astype(dtype)
        group.attrs.update({**attrs, "rows": n})


def read_hashes(path: Path) -> np.ndarray | None:
    """(rows, 32) uint8 of a group, or None if it is absent."""
    import zarr

    if not (path / "zarr.json").exists():
        return None
    return np.asarray(zarr.open_group(str(path), mode="r")["sha256"][:])


def read_rows(path: Path, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((rows, bins, dim), (rows, dim)) float32 from a group, all rows or the ones asked for."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    if rows is None:
        rows = slice(None)
    if isinstance(rows, slice):
        bins, mean = group["bins"][rows], group["mean"][rows]
    else:
        rows = np.asarray(rows, dtype=np.int64)
        bins = group["bins"].get_orthogonal_selection((rows, slice(None), slice(None)))
        mean = group["mean"].get_orthogonal_selection((rows, slice(None)))
    return np.asarray(bins, dtype=np.float32), np.asarray(mean, dtype=np.float32)


class HashIndex:
    """sequence sha256 -> (group path, row) over every group of one store; built lazily."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._map: dict[bytes, tuple[Path, int]] | None = None

    def _groups(self) -> list[Path]:
        out: list[Path] = []
        for d in group_dirs(self.root):
            out += sorted(p for p in d.iterdir() if p.suffix == ".zarr" and not p.name.startswith("."))
        return out

    @property
    def map(self) -> dict[bytes, tuple[Path, int]]:
        if self._map is None:
            self._map = {}
            for group in self._groups():
                hashes = read_hashes(group)
                if hashes is not None:
                    self.add(group, hashes)
        return self._map

    def add(self, group: Path, hashes: np.ndarray) -> None:
        m = self._map if self._map is not None else self.map
        for row, h in enumerate(hashes):
            m.setdefault(bytes(h), (group, row))

    def drop(self, group: Path) -> None:
        """Forget the rows of a group about to be replaced (its row numbers will change)."""
        if self._map is not None:
            self._map = {h: loc for h, loc in self._map.items() if loc[0] != group}

    def refresh(self) -> None:
        """Forget the index; it is rebuilt from the groups on disk at the next question."""
        self._map = None

    def __contains__(self, digest: bytes) -> bool:
        return bytes(digest) in self.map

    def __len__(self) -> int:
        return len(self.map)

    def fetch(self, digests: Sequence[bytes], *, bins: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """((n, bins, dim), (n, dim)) float32 for digests all present in the index."""
        out_bins = np.zeros((len(digests), bins, dim), dtype=np.float32)
        out_mean = np.zeros((len(digests), dim), dtype=np.float32)
        by_group: dict[Path, list[tuple[int, int]]] = {}
        for i, d in enumerate(digests):
            group, row = self.map[bytes(d)]
            by_group.setdefault(group, []).append((i, row))
        for group, pairs in by_group.items():
            idx, rows = (np.array(x) for x in zip(*pairs, strict=True))
            b, m = read_rows(group, rows)
            out_bins[idx], out_mean[idx] = b, m
        return out_bins, out_mean


def layer_note(info: dict) -> str:
    """``", layer L"`` for a store of one hidden layer; nothing for embedders without layers
    (k-mer counts, Enformer's tracks), whose info records ``layer`` None."""
    layer = info.get("layer", "?")
    return "" if layer is None else f", layer {layer}"


def store_root(study_path: str | Path, fingerprint: str) -> Path:
    """``STUDY/embeddings/<fingerprint>``: the store itself, or (with ``--cache``) its info.json
    naming where the shared store lives."""
    return Path(study_path) / EMBEDDINGS_DIR / fingerprint


def data_location(root: Path, info: dict) -> tuple[Path, Path]:
    """(store root, this study's gene-group folder) for a study's store whose info is ``info``:
    the study's own folder, or a shared ``--cache`` store where each study keeps its gene groups
    under ``studies/<study_key>/genes`` and every study's sequences are found by hash."""
    if info.get("store_root"):
        shared = Path(info["store_root"])
        return shared, shared / "studies" / str(info["study_key"]) / "genes"
    return root, root / "genes"


def study_key(study_path: str | Path) -> str:
    """A stable name for a study inside a shared store (its resolved path, hashed)."""
    return hashlib.sha256(str(Path(study_path).resolve()).encode()).hexdigest()[:16]


def group_dirs(root: Path) -> list[Path]:
    """Every folder of groups under a store root: ``genes/`` and ``extra/`` of a study's own store,
    and ``studies/<key>/genes/`` of each study sharing a ``--cache`` store."""
    dirs = [root / "genes", root / "extra", *sorted((root / "studies").glob("*/genes"))]
    return [d for d in dirs if d.is_dir()]


def clean_stale(genes_dir: Path) -> None:
    """Remove temporary and set-aside directories a killed run left in a study's own group
    folder and in ``extra/`` (caller holds the study lock)."""
    for d in (genes_dir, genes_dir.parent / "extra"):
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith((TMP_DIR_PREFIX, OLD_DIR_PREFIX)):
                    shutil.rmtree(p, ignore_errors=True)


def write_info(root: Path, info: dict, **updates) -> dict:
    """Create or update ``info.json``; ``created`` is kept, ``updated`` set to now."""
    path = root / INFO
    old = json.loads(path.read_text()) if path.exists() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    new = {**old, **info, **updates, "created": old.get("created", now), "updated": now}
    new["updated_unix"] = time.time()
    write_json(path, new)
    return new


class EmbeddingStore:
    """One fingerprint's embeddings in a study, read-only.

    ``fingerprint``: the directory name; ``info``: the parsed ``info.json``. Arrays come back as
    float32 (stored as float16), rows in ``gene.sequences`` order.
    """

    def __init__(self, root: Path, info: dict) -> None:
        self.root, self.genes_dir = data_location(root, info)
        self.info = info
        self.fingerprint = str(info["fingerprint"])
        self.index = HashIndex(self.root)

    def gene_group(self, gene_id: str) -> Path:
        return self.genes_dir / gene_group_name(gene_id)

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.root}, model={self.info.get('model')!r})"

    @property
    def bins(self) -> int:
        return int(self.info["bins"])

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def _gene_rows(self, gene) -> tuple[np.ndarray, np.ndarray]:
        return self.sequence_rows(gene, gene.sequences)

    def sequence_rows(self, gene, sequences, *, compute=None) -> tuple[np.ndarray, np.ndarray]:
        """((n, bins, dim), (n, dim)) float32 of ``sequences`` of ``gene``: the gene's own group
        when it holds exactly these sequences, else by hash from every group. Sequences the store
        lacks are a StudyError, or, with ``compute`` (sequences -> rows, e.g. an embedder's
        ``embed``, which adds them to the store), computed."""
        hashes = hashes_of(sequences)
        group = self.gene_group(gene.gene_id)
        stored = read_hashes(group)
        if stored is not None and np.array_equal(stored, hashes):
            return read_rows(group)
        digests = [bytes(h) for h in hashes]
        missing = sum(d not in self.index for d in digests)
        if missing and compute is not None:
            rows = compute(list(sequences))
            self.index.refresh()
            return rows
        if missing:
            raise StudyError(
                f"{missing} of {len(digests)} haplotypes of gene {gene.gene_id} have no embedding "
                f"in store {self.fingerprint}",
                path=self.root,
                hint=f"run `hapexpr embed {self.root.parent.parent}` with the same model options to finish it",
            )
        return self.index.fetch(digests, bins=self.bins, dim=self.dim)

    def haplotype_bins(self, gene) -> np.ndarray:
        """(unique, bins, dim) float32 binned embeddings of the gene's distinct haplotypes."""
        return self._gene_rows(gene)[0]

    def haplotype_mean(self, gene) -> np.ndarray:
        """(unique, dim) float32 mean-pooled embeddings of the gene's distinct haplotypes."""
        return self._gene_rows(gene)[1]

    def sample_bins(self, gene) -> np.ndarray:
        """(samples, haplotypes=2, bins, dim) float32, through ``gene.hap_index``."""
        return self.haplotype_bins(gene)[np.asarray(gene.hap_index)]

    def sample_mean(self, gene) -> np.ndarray:
        """(samples, haplotypes=2, dim) float32, through ``gene.hap_index``."""
        return self.haplotype_mean(gene)[np.asarray(gene.hap_index)]

    def has_gene(self, gene) -> bool:
        stored = read_hashes(self.gene_group(gene.gene_id))
        return stored is not None and np.array_equal(stored, hashes_of(gene.sequences))


def list_stores(study_path: str | Path) -> list[dict]:
    """info.json of every store in a study, most recently updated first."""
    base = Path(study_path) / EMBEDDINGS_DIR
    infos = []
    if base.is_dir():
        for d in base.iterdir():
            p = d / INFO
            if p.is_file():
                try:
                    infos.append(json.loads(p.read_text()))
                except json.JSONDecodeError:
                    continue
    return sorted(infos, key=lambda i: i.get("updated_unix", 0.0), reverse=True)


def open_embeddings(study_path: str | Path, fingerprint: str | None = None) -> EmbeddingStore:
    """Open a study's embedding store: the one with ``fingerprint`` (a unique prefix is enough,
    or the ``--model`` it was made with, e.g. ``kmer:4`` or ``tiny``: then the most recent such
    store), or, when None, the most recently updated one."""
    infos = list_stores(study_path)
    # A --fingerprint that is not a fingerprint is the --model the store would be made with.
    is_model = fingerprint is not None and not all(c in "0123456789abcdef" for c in fingerprint)
    make = f"run `hapexpr embed {study_path}{f' --model {fingerprint}' if is_model else ''}`"
    if not infos:
        raise StudyError("the study has no embeddings", path=Path(study_path) / EMBEDDINGS_DIR, hint=f"{make} first")
    if fingerprint is not None:
        by_model = [i for i in infos if str(i.get("model_spec")) == fingerprint]
        infos = by_model[:1] or [i for i in infos if str(i["fingerprint"]).startswith(fingerprint)]
        if len(infos) != 1:
            have = ", ".join(f"{i['fingerprint']} ({i.get('model_spec')})" for i in list_stores(study_path))
            hint = "pass one of the fingerprints or models listed, or none for the most recent"
            raise StudyError(
                f"{'no' if not infos else 'more than one'} embedding store matches {fingerprint!r} (stores: {have})",
                path=Path(study_path) / EMBEDDINGS_DIR,
                hint=f"{make} to make it, or {hint}" if is_model and not infos else hint,
            )
    info = infos[0]
    return EmbeddingStore(store_root(study_path, info["fingerprint"]), info)


class EmbeddingCache:
    """Writable side of a store: commit a gene's group, or add sequences embedded on request.

    ``index`` answers which sequence hashes are already embedded; every write updates it.
    """

    def __init__(self, root: Path, genes_dir: Path | None = None, *, dtype: str = "float16") -> None:
        self.root = root
        self.genes_dir = genes_dir or root / "genes"
        self.dtype = dtype
        self.index = HashIndex(root)

    def gene_path(self, gene_id: str) -> Path:
        return self.genes_dir / gene_group_name(gene_id)

    def gene_complete(self, gene_id: str, hashes: np.ndarray) -> bool:
        """True when the gene's group holds exactly these haplotypes in this order."""
        stored = read_hashes(self.gene_path(gene_id))
        return stored is not None and np.array_equal(stored, hashes)

    def write_gene(self, gene_id: str, hashes: np.ndarray, bins: np.ndarray, mean: np.ndarray) -> None:
        path = self.gene_path(gene_id)
        write_group(path, hashes, bins, mean, dtype=self.dtype, gene_id=gene_id)
        self.index.drop(path)
        self.index.add(path, hashes)

    def add_extra(self, hashes: np.ndarray, bins: np.ndarray, mean: np.ndarray) -> None:
        path = self.root / "extra" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.zarr"
        write_group(path, hashes, bins, mean, dtype=self.dtype)
        self.index.add(path, hashes)
