"""Enformer weights, inputs and the per-gene output cache behind ``hapexpr fit --method enformer``.

Why the model is built by hand: enformer-pytorch 0.8.11's ``Enformer.from_pretrained`` and
``save_pretrained`` go through ``transformers.PreTrainedModel``, and both break on transformers 5
(0.8.12 avoids that only by pinning transformers 4.56.2; loading should not hang on that pin):
loading stops with ``AttributeError: 'Enformer' object
has no attribute 'all_tied_weights_keys'`` (``Enformer.__init__`` never calls ``post_init``), and
saving refuses the module's shared tensors (``stem`` and ``_trunk.1`` are the same weights). So a
checkpoint directory is read as data: ``config.json`` gives the hyper-parameters for
``Enformer.from_hparams`` and the state dict comes from ``model.safetensors`` (preferred) or
``pytorch_model.bin`` (only through ``torch.load(weights_only=True)``, which cannot run code).

Shapes: a model input is (batch, seq_len, 4) one-hot, A C G T, anything else (N) all-zero; the
trunk yields (batch, seq_len / 128, dim) bins of 128 bp; the human head 5,313 tracks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError
from hapexpr.io.atomic import atomic_open, atomic_path

BIN_BP = 128
ENFORMER_SEQ_LEN = 196_608  # the published model's input, TSS at index 98,304
HUMAN_TRACKS = 5_313
DEFAULT_TSS_BINS = 3
CACHE_VERSION = 1
TINY_MAX_SEQ_LEN = 6_144  # keeps the random tiny model ~25 ms a sequence on one CPU core
_HPARAM_KEYS = (
    "dim",
    "depth",
    "heads",
    "output_heads",
    "target_length",
    "attn_dim_key",
    "dropout_rate",
    "attn_dropout",
    "pos_dropout",
    "use_checkpointing",
    "use_convnext",
    "num_downsamples",
    "dim_divisible_by",
    "use_tf_gamma",
)

# A C G T (either case) -> one-hot rows; every other byte (N, IUPAC codes) stays all-zero.
_ONE_HOT = np.zeros((256, 4), dtype=np.float32)
for _i, _b in enumerate(b"ACGT"):
    _ONE_HOT[_b, _i] = 1.0
    _ONE_HOT[_b + 32, _i] = 1.0


def tiny_hparams() -> dict:
    """Hyper-parameters of the tiny random Enformer: the real layout (7 halvings, so 128 bp
    bins, and all 5,313 human tracks, so track indices mean what they mean in the real model)
    with a 48-wide, one-layer trunk."""
    return dict(
        dim=48,
        depth=1,
        heads=2,
        output_heads=dict(human=HUMAN_TRACKS),
        target_length=-1,
        dim_divisible_by=8,
        num_downsamples=7,
        use_tf_gamma=False,
    )


def tiny_enformer(seed: int = 0):
    """A randomly initialised, seeded tiny ``Enformer`` in eval mode (~0.6 M parameters)."""
    import torch
    from enformer_pytorch import Enformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Enformer.from_hparams(**tiny_hparams())
    return model.eval()


def _hparams(model) -> dict:
    cfg = model.config
    return {k: getattr(cfg, k) for k in _HPARAM_KEYS if hasattr(cfg, k)}


def _unique_state(model) -> dict:
    """State dict with each shared tensor once, under its first (non-``_trunk``) name."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape)) if t.numel() else name
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().cpu().contiguous()
    return out


def save_enformer(model, path: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (shared tensors once) into directory ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / "model.safetensors") as tmp:
        save_file(_unique_state(model), str(tmp), metadata={"format": "pt"})
    with atomic_open(path / "config.json") as fh:
        json.dump({"model_type": "enformer", **_hparams(model)}, fh, indent=2, sort_keys=True)
    return path


def _read_state(path: Path) -> tuple[dict, Path]:
    import torch

    st, pt = path / "model.safetensors", path / "pytorch_model.bin"
    if st.exists():
        from safetensors.torch import load_file

        return load_file(str(st)), st
    if pt.exists():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True), pt
        except Exception as exc:  # pickles that need code to load are refused on purpose
            raise InputError(
                f"cannot read the weights safely ({type(exc).__name__}: {exc})",
                path=pt,
                hint="convert the checkpoint to model.safetensors",
            ) from None
    raise InputError(
        "no model.safetensors or pytorch_model.bin in the Enformer checkpoint directory",
        path=path,
        hint="point --model at a directory holding config.json and the weights",
    )


def load_enformer(path: str | Path, *, use_tf_gamma: bool | None = None):
    """An ``Enformer`` in eval mode from a local checkpoint directory (never downloads).

    ``use_tf_gamma``: use the TensorFlow-computed positional gammas, which the converted official
    weights (EleutherAI/enformer-official-rough) were checked with; they exist only for the full
    196,608 bp input. ``None`` keeps the value in config.json (the caller may switch it later
    with :func:`set_tf_gamma`).
    """
    from enformer_pytorch import Enformer

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise InputError(
            "not an Enformer checkpoint directory (config.json is missing)",
            path=path,
            hint="pass --model tiny, or a directory with config.json and model.safetensors",
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"config.json is not valid JSON ({exc})", path=cfg_path) from None
    hp = {k: cfg[k] for k in _HPARAM_KEYS if k in cfg}
    if "human" not in (hp.get("output_heads") or {"human": HUMAN_TRACKS}):
        raise InputError(
            "the checkpoint has no human output head",
            path=cfg_path,
            hint="hapexpr scores the human CAGE tracks; use a human Enformer checkpoint",
        )
    model = Enformer.from_hparams(**hp)
    state, weights = _read_state(path)
    _load_state(model, state, weights)
    if use_tf_gamma is not None:
        set_tf_gamma(model, use_tf_gamma)
    return model.eval()


def _load_state(model, state: dict, weights: Path) -> None:
    """Load ``state`` strictly, accepting any one of the names a shared tensor goes by."""
    if state and all(k.startswith("enformer.") for k in state):
        state = {k[len("enformer.") :]: v for k, v in state.items()}
    groups: dict[tuple, list[str]] = {}
    for name, t in model.state_dict().items():
        groups.setdefault((t.data_ptr(), t.dtype, tuple(t.shape)) if t.numel() else (name,), []).append(name)
    full, missing = {}, []
    for names in groups.values():
        have = next((n for n in names if n in state), None)
        if have is None:
            missing.extend(names[:1])
        else:
            full.update({n: state[have] for n in names})
    unexpected = sorted(set(state) - set(full))
    if missing or unexpected:
        raise InputError(
            f"the weights do not fit the architecture in config.json: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})",
            path=weights,
            hint="check that config.json belongs to these weights",
        )
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:
        raise InputError(
            f"the weights do not fit config.json ({str(exc).splitlines()[0]})",
            path=weights,
            hint="check that config.json belongs to these weights",
        ) from None


def set_tf_gamma(model, flag: bool) -> None:
    for module in model.modules():
        if hasattr(module, "use_tf_gamma"):
            module.use_tf_gamma = bool(flag)


def weights_sha256(model_spec: str, model) -> str:
    """Content hash of the weights: of the weights file for a checkpoint directory, of the
    safetensors serialisation of the state dict for the in-memory tiny model."""
    if model_spec != "tiny":
        path = Path(model_spec)
        f = path / "model.safetensors"
        f = f if f.exists() else path / "pytorch_model.bin"
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 23), b""):
                h.update(chunk)
        return h.hexdigest()
    from safetensors.torch import save

    return hashlib.sha256(save(dict(sorted(_unique_state(model).items())))).hexdigest()


# --------------------------------------------------------------------------------- inputs


def default_seq_len(model_spec: str, window: int) -> int:
    """Input length when the user gives none: the published 196,608 bp for real weights; for
    the tiny model the study window rounded up to whole 128 bp bins, at most 6,144 bp."""
    if model_spec != "tiny":
        return ENFORMER_SEQ_LEN
    return int(min(max(-(-window // BIN_BP) * BIN_BP, 8 * BIN_BP), TINY_MAX_SEQ_LEN))


def check_seq_len(seq_len: int, n_bins: int) -> None:
    if seq_len % BIN_BP or seq_len < BIN_BP * (n_bins + 2):
        raise InputError(
            f"--seq-len {seq_len} is not a multiple of {BIN_BP} bp of at least {BIN_BP * (n_bins + 2)} bp",
            hint=f"Enformer halves the sequence 7 times; use e.g. {ENFORMER_SEQ_LEN} (the published length)",
        )


def centre_on_tss(seq: bytes, tss_offset: int, seq_len: int) -> bytes:
    """The model input: ``seq_len`` bp with ``seq[tss_offset]`` at index ``seq_len // 2``.

    A window shorter than ``seq_len`` is padded with N on both sides (all-zero one-hot: the
    model sees no sequence there); a longer one is cropped symmetrically around the TSS.
    """
    start = tss_offset - seq_len // 2  # source index of output position 0
    lo, hi = max(start, 0), min(start + seq_len, len(seq))
    left = lo - start
    body = seq[lo:hi] if hi > lo else b""
    return b"N" * left + body + b"N" * (seq_len - left - len(body))


def one_hot(seqs: list[bytes]) -> np.ndarray:
    """(batch, length, 4) float32 one-hot of equal-length sequences; N and others all-zero."""
    arr = np.frombuffer(b"".join(seqs), dtype=np.uint8).reshape(len(seqs), -1)
    return _ONE_HOT[arr]


def tss_bins(seq_len: int, n_bins: int = DEFAULT_TSS_BINS) -> np.ndarray:
    """(n_bins,) indices, into the trunk's seq_len/128 uncropped bins, of the bins around the TSS.

    The TSS (input index seq_len//2) lies in bin c = (seq_len//2)//128; the bins are
    c - n_bins//2 .. c + (n_bins-1)//2: for 3 bins c-1, c, c+1. At 196,608 bp c = 768, i.e.
    bins 447, 448, 449 of the published model's 896 cropped output bins.
    """
    c = (seq_len // 2) // BIN_BP
    return np.arange(c - n_bins // 2, c + (n_bins - 1) // 2 + 1)


def tss_bin_outputs(model, x, bins: np.ndarray):
    """(batch, bins, tracks) human-head predictions at ``bins``, for x (batch, L, 4).

    Runs the trunk up to the transformer on the whole input and the pointwise layers and head on
    the TSS bins only; equal to ``model(x, head="human")`` at those bins without the final crop
    (the crop only removes edge bins, and the layers after it act on each bin alone in eval).
    """
    h = model.stem(x.transpose(1, 2))
    h = model.conv_tower(h).transpose(1, 2)
    h = model.transformer(h)[:, bins]
    return model.heads["human"](model.final_pointwise(h))


def tss_outputs(model, x, bins: np.ndarray):
    """(batch, tracks) human-head predictions summed over ``bins``, for x (batch, L, 4)."""
    return tss_bin_outputs(model, x, bins).sum(dim=1)


# ------------------------------------------------------------------------- model runner


class EnformerRunner:
    """One loaded Enformer with the input geometry it is run at, and the cache fingerprint.

    ``predict`` returns (sequences, tracks) float32: the human head summed over the TSS bins.
    ``n_forward`` counts forward passes (batches), so callers and tests can see cache reuse.
    """

    def __init__(
        self,
        *,
        model: str = "tiny",
        seq_len: int,
        n_bins: int = DEFAULT_TSS_BINS,
        batch_size: int = 2,
        device: str = "cpu",
        seed: int = 0,
        use_tf_gamma: bool | None = None,
    ) -> None:
        import torch

        check_seq_len(seq_len, n_bins)
        if batch_size < 1:
            raise InputError(f"--batch-size {batch_size} must be at least 1")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(
                f"--device {device} was asked for but torch sees no CUDA device",
                hint="use --device cpu, or run where a GPU is visible",
            )
        self.model_spec = str(model)
        self.net = tiny_enformer(seed) if self.model_spec == "tiny" else load_enformer(self.model_spec)
        if use_tf_gamma is None:
            # The TF gammas match the converted official weights but exist for 1,536 bins only.
            use_tf_gamma = self.model_spec != "tiny" and seq_len == ENFORMER_SEQ_LEN and self.net.config.dim == 1536
        set_tf_gamma(self.net, use_tf_gamma)
        self.net.to(device)
        self.seq_len, self.batch_size, self.device = int(seq_len), int(batch_size), device
        self.bins = tss_bins(seq_len, n_bins)
        self.n_tracks = int(self.net.config.output_heads["human"])
        self.use_tf_gamma = bool(use_tf_gamma)
        self.weights_sha256 = weights_sha256(self.model_spec, self.net)
        self.n_forward = 0

    @property
    def key(self) -> dict:
        """What the outputs depend on, and nothing else (not the batch size or device)."""
        return {
            "cache_version": CACHE_VERSION,
            "weights_sha256": self.weights_sha256,
            "hparams": _hparams(self.net),
            "seq_len": self.seq_len,
            "tss_bins": [int(b) for b in self.bins],
            "use_tf_gamma": self.use_tf_gamma,
        }

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]

    def predict(self, seqs: list[bytes]) -> np.ndarray:
        """(len(seqs), tracks) float32 for model inputs of exactly ``seq_len`` bp each: the
        human head summed over the TSS bins."""
        return self.predict_bins(seqs)[1]

    def predict_bins(self, seqs: list[bytes], on_batch=None) -> tuple[np.ndarray, np.ndarray]:
        """((n, bins, tracks), (n, tracks)) float32: each TSS bin's outputs, and their sum."""
        import torch

        per_bin = np.empty((len(seqs), len(self.bins), self.n_tracks), dtype=np.float32)
        summed = np.empty((len(seqs), self.n_tracks), dtype=np.float32)
        bins = torch.as_tensor(self.bins, device=self.device)
        with torch.inference_mode():
            for i in range(0, len(seqs), self.batch_size):
                batch = seqs[i : i + self.batch_size]
                if any(len(s) != self.seq_len for s in batch):
                    raise ValueError(f"model inputs must be {self.seq_len} bp")
                x = torch.from_numpy(one_hot(batch)).to(self.device)
                h = tss_bin_outputs(self.net, x, bins)
                per_bin[i : i + len(batch)] = h.float().cpu().numpy()
                summed[i : i + len(batch)] = h.sum(dim=1).float().cpu().numpy()
                self.n_forward += 1
                if on_batch is not None:
                    on_batch(len(batch))
        return per_bin, summed
