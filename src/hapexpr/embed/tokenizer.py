"""The Nucleotide Transformer's 6-mer tokenizer, and an adapter for a checkpoint's own tokenizer.

NT (v1 and v2) tokenizes DNA into non-overlapping 6-mers read from the start of each run of
unambiguous bases; ``N`` is always its own token and is never inside a 6-mer, and bases left over
at the end of a run (fewer than 6) become single-base tokens. A ``<cls>`` token comes first and no
``<eos>`` is appended. The built-in :class:`NTTokenizer` reproduces this exactly (vocabulary order
included) so the tiny model of the tests uses the real scheme; with a real checkpoint the
checkpoint's own tokenizer files are used through :class:`HFTokenizer`.

Both return, for every token, the 0-based half-open span of bases it covers, so pooling can map
hidden states back to positions in the window (special tokens cover no bases).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError

K = 6
SPECIAL_HEAD = ["<unk>", "<pad>", "<mask>", "<cls>"]
SPECIAL_TAIL = ["<eos>", "<bos>"]
SINGLE_BASES = ["A", "T", "C", "G", "N"]
KMERS = ["".join(p) for p in itertools.product("ATCG", repeat=K)]
VOCAB: list[str] = SPECIAL_HEAD + KMERS + SINGLE_BASES + SPECIAL_TAIL
"""The 4,107 tokens of NT in id order: specials, the 4,096 6-mers, single bases, ``<eos> <bos>``."""

UNK_ID, PAD_ID, MASK_ID, CLS_ID = 0, 1, 2, 3
_KMER_BASE = len(SPECIAL_HEAD)
_SINGLE_BASE = _KMER_BASE + len(KMERS)
N_ID = _SINGLE_BASE + SINGLE_BASES.index("N")

# Lookup tables on bytes: base code 0..3 in "ATCG" order (the 6-mer id is a base-4 number in that
# order), 4 for N, 5 for anything else (an <unk> token that, like N, breaks 6-mers).
_CODE = np.full(256, 5, dtype=np.int64)
for _i, _b in enumerate(b"ATCG"):
    _CODE[_b] = _i
    _CODE[ord(chr(_b).lower())] = _i
_CODE[ord("N")] = _CODE[ord("n")] = 4
_POW = 4 ** np.arange(K - 1, -1, -1, dtype=np.int64)


@dataclass(frozen=True)
class Tokens:
    """One tokenized sequence.

    ids: (tokens,) int64 vocabulary ids, ``<cls>`` first.
    starts, ends: (tokens,) int64 half-open base spans in the input; ``start == end`` for
        special tokens.
    """

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class NTTokenizer:
    """NT's 6-mer tokenizer, vectorised with numpy (a 6 kb haplotype takes well under 1 ms)."""

    name = "nt-6mer"
    vocab = VOCAB
    pad_id = PAD_ID

    def tokenize(self, sequence: bytes | str) -> Tokens:
        if isinstance(sequence, str):
            sequence = sequence.encode("ascii")
        codes = _CODE[np.frombuffer(sequence, dtype=np.uint8)]
        n = len(codes)
        ids: list[np.ndarray] = [np.array([CLS_ID])]
        starts: list[np.ndarray] = [np.array([0])]
        lens: list[np.ndarray] = [np.array([0])]
        # Runs of unambiguous bases between breakers (N or unknown): 6-mers then leftovers.
        breaks = np.flatnonzero(codes >= 4)
        run_bounds = np.concatenate([[-1], breaks, [n]])
        for k in range(len(run_bounds) - 1):
            lo, hi = run_bounds[k] + 1, run_bounds[k + 1]
            if hi > lo:
                m = (hi - lo) // K
                if m:
                    block = codes[lo : lo + m * K].reshape(m, K)
                    ids.append(_KMER_BASE + block @ _POW)
                    starts.append(lo + K * np.arange(m))
                    lens.append(np.full(m, K))
                rest = np.arange(lo + m * K, hi)
                if len(rest):
                    ids.append(_SINGLE_BASE + codes[rest])
                    starts.append(rest)
                    lens.append(np.ones(len(rest), dtype=np.int64))
            if hi < n:
                ids.append(np.array([N_ID if codes[hi] == 4 else UNK_ID]))
                starts.append(np.array([hi]))
                lens.append(np.array([1]))
        ids_a = np.concatenate(ids).astype(np.int64)
        starts_a = np.concatenate(starts).astype(np.int64)
        return Tokens(ids=ids_a, starts=starts_a, ends=starts_a + np.concatenate(lens))

    def tokens_as_text(self, sequence: bytes | str) -> list[str]:
        return [VOCAB[i] for i in self.tokenize(sequence).ids]

    def fingerprint(self) -> str:
        return vocab_sha256(VOCAB)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write HuggingFace tokenizer files (an ``EsmTokenizer``) that reproduce this scheme."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        config = {
            "tokenizer_class": "EsmTokenizer",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
            "cls_token": "<cls>",
            "eos_token": None,  # NT appends no <eos>
            "model_max_length": 1000,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


class HFTokenizer:
    """A checkpoint's own tokenizer (``AutoTokenizer``, local files only) with base spans.

    Spans come from the token strings: a special token covers no bases, any other token covers
    as many bases as it has letters, in order. This holds for NT's vocabulary (and any k-mer or
    character vocabulary) and is checked against the sequence length.
    """

    def __init__(self, tokenizer) -> None:
        self.hf = tokenizer
        self.name = type(tokenizer).__name__
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else PAD_ID)
        self._special = set(tokenizer.all_special_ids)
        vocab = tokenizer.get_vocab()
        self.vocab = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        self._len = {i: (0 if i in self._special else len(t)) for t, i in vocab.items()}

    @classmethod
    def from_directory(cls, path: str | Path, *, trust_remote_code: bool = False) -> HFTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code))

    def tokenize(self, sequence: bytes | str) -> Tokens:
        text = sequence.decode("ascii") if isinstance(sequence, bytes) else sequence
        text = text.upper()
        ids = np.asarray(self.hf(text, add_special_tokens=True)["input_ids"], dtype=np.int64)
        lens = np.array([self._len.get(int(i), 1) for i in ids], dtype=np.int64)
        ends = np.cumsum(lens)
        if ends[-1] != len(text):
            raise InputError(
                f"the checkpoint's tokenizer ({self.name}) is not a nucleotide k-mer tokenizer: "
                f"its tokens cover {ends[-1]} bases of a {len(text)} bp sequence",
                hint="use a Nucleotide Transformer checkpoint with its own tokenizer files",
            )
        return Tokens(ids=ids, starts=ends - lens, ends=ends)

    def fingerprint(self) -> str:
        return vocab_sha256(self.vocab)


def vocab_sha256(vocab: list[str]) -> str:
    return hashlib.sha256("\n".join(vocab).encode()).hexdigest()
