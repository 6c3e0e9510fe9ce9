"""Nucleotide Transformer models: the tiny seeded stand-in and real checkpoints from a local path.

NT v1 (``InstaDeepAI/nucleotide-transformer-*``, e.g. ``500m-1000g``) is transformers' ESM
architecture with learned absolute positions (1,002 position embeddings: 1,000 tokens after ESM's
offset of ``pad_token_id + 1``), no token dropout, no embedding layer norm, a final layer norm,
and a 4,105-row embedding matrix (the 4,107-token vocabulary minus the never-used ``<eos>
<bos>``). NT v2 adds rotary positions and gated feed-forward layers in custom code, so it loads
only with ``trust_remote_code=True``. Nothing is ever downloaded: ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapexpr.embed.tokenizer import HFTokenizer, NTTokenizer
from hapexpr.errors import InputError

TINY = "tiny"

NT_V1_CONFIG: dict[str, Any] = {
    "vocab_size": 4105,
    "hidden_size": 1280,
    "num_hidden_layers": 24,
    "num_attention_heads": 20,
    "intermediate_size": 5120,
    "max_position_embeddings": 1002,
    "position_embedding_type": "absolute",
    "pad_token_id": 1,
    "mask_token_id": 2,
    "token_dropout": False,
    "emb_layer_norm_before": False,
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "is_folding_model": False,
}
"""The configuration of ``nucleotide-transformer-500m-1000g`` (and ``-500m-human-ref``)."""

TINY_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for embedding.

    encoder: the transformer without its LM head (``EsmModel``-like: ``input_ids``,
        ``attention_mask``, ``output_hidden_states``), in eval mode.
    tokenizer: NTTokenizer or HFTokenizer.
    name: ``"tiny"`` or the checkpoint directory as given.
    n_layers: number of transformer layers; hidden states are numbered 0 (embeddings) to n_layers.
    max_tokens: most tokens one sequence may have, ``<cls>`` included.
    dim: hidden size.
    """

    encoder: Any
    tokenizer: Any
    name: str
    tiny: bool
    n_layers: int
    max_tokens: int
    dim: int


def nt_v1_config(**overrides: Any):
    """An ``EsmConfig`` of the NT v1 architecture, SDPA attention, with ``overrides`` applied."""
    from transformers import EsmConfig

    return EsmConfig(**{**NT_V1_CONFIG, **overrides}, attn_implementation="sdpa")


def tiny_nt_model(seed: int = 0):
    """A small randomly initialised ``EsmForMaskedLM`` of the NT v1 architecture, reproducible
    from ``seed`` (hidden 64, 2 layers, 4 heads, up to 1,000 tokens, NT's vocabulary)."""
    import torch
    from transformers import EsmForMaskedLM

    config = nt_v1_config(**TINY_SIZES)
    # Seed a private generator state so building the model does not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EsmForMaskedLM(config)
    return model.eval()


def save_tiny(directory: str | Path, *, seed: int = 0) -> Path:
    """Save the tiny model and NT tokenizer files as a checkpoint directory loadable by path."""
    directory = Path(directory)
    tiny_nt_model(seed).save_pretrained(directory)
    NTTokenizer().save_pretrained(directory)
    return directory


def _encoder_of(model):
    # Embeddings come from the transformer body; the LM head would cost a (tokens x vocabulary)
    # projection per sequence for nothing. ``base_model`` is the body of any transformers LM
    # (``esm`` for NT, the decoder stack of a causal LM).
    return getattr(model, "base_model", model)


def _max_tokens(config) -> int:
    n = int(getattr(config, "max_position_embeddings", 1002))
    if (
        getattr(config, "model_type", "") == "esm"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
    ):
        # ESM numbers positions from pad_token_id + 1, so the first two rows are never used.
        n -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return n


def _describe(model, tokenizer, *, name: str, tiny: bool) -> LoadedModel:
    config = model.config
    return LoadedModel(
        encoder=_encoder_of(model).eval(),
        tokenizer=tokenizer,
        name=name,
        tiny=tiny,
        n_layers=int(config.num_hidden_layers),
        max_tokens=_max_tokens(config),
        dim=int(config.hidden_size),
    )


def load_tiny(seed: int = 0) -> LoadedModel:
    return _describe(tiny_nt_model(seed), NTTokenizer(), name=TINY, tiny=True)


def load_model(path: str | Path, *, trust_remote_code: bool = False) -> LoadedModel:
    """Load a checkpoint directory (model + its own tokenizer files), never downloading.

    NT v1 checkpoints load with transformers' ESM classes; checkpoints whose ``config.json``
    names custom code (NT v2) need ``trust_remote_code=True``, which runs Python shipped in the
    directory, so it is never implied.
    """
    import json

    path = Path(path)
    config_path = path / "config.json"
    if not config_path.exists():
        raise InputError(
            "not a model checkpoint directory (config.json is missing)",
            path=path,
            hint="pass --model tiny, or a directory saved with save_pretrained() from a "
            "Nucleotide Transformer checkpoint (see docs/embeddings.md)",
        )
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"config.json is not valid JSON ({exc})", path=config_path) from None
    if raw.get("auto_map") and not trust_remote_code:
        raise InputError(
            "this checkpoint needs its own Python code (config.json has an auto_map, as NT v2 checkpoints do)",
            path=config_path,
            hint="rerun with --trust-remote-code if you trust the code in that directory",
        )
    if not (path / "vocab.txt").exists() and not (path / "tokenizer_config.json").exists():
        raise InputError(
            "the checkpoint has no tokenizer files (vocab.txt / tokenizer_config.json)",
            path=path,
            hint="save the tokenizer beside the model: AutoTokenizer.from_pretrained(name).save_pretrained(directory)",
        )
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    # A masked LM (NT, DNABERT-style) or else a causal LM (HyenaDNA-, GPT-style DNA models).
    model = None
    for auto in (AutoModelForMaskedLM, AutoModelForCausalLM):
        try:
            model = _from_pretrained(auto, path, kwargs)
            break
        except ValueError as exc:
            if "Unrecognized configuration class" not in str(exc):
                raise InputError(f"could not load the checkpoint ({exc})", path=path) from None
        except OSError as exc:
            raise InputError(f"could not load the checkpoint ({exc})", path=path) from None
    if model is None:
        raise InputError(
            "the checkpoint is neither a masked nor a causal language model that transformers knows",
            path=path,
            hint="pass a Nucleotide Transformer (or another DNA LM) checkpoint directory",
        )
    tokenizer = HFTokenizer.from_directory(path, trust_remote_code=trust_remote_code)
    return _describe(model.float(), tokenizer, name=str(path), tiny=False)


def _from_pretrained(auto, path: Path, kwargs: dict):
    """``auto.from_pretrained`` from the directory only (never the hub), SDPA attention if the
    model has it."""
    try:
        return auto.from_pretrained(str(path), local_files_only=True, attn_implementation="sdpa", **kwargs)
    except ImportError:
        return auto.from_pretrained(str(path), local_files_only=True, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise
        # Custom (remote) code may not declare SDPA support; use its own attention then.
        return auto.from_pretrained(str(path), local_files_only=True, **kwargs)


def weights_sha256(encoder) -> str:
    """sha256 over the encoder's parameters and buffers (names, dtypes, shapes, bytes).

    ESM's contact-prediction head is left out: embedding never uses it and checkpoints saved
    from a masked-LM model do not carry it, so it is freshly (randomly) initialised at load.
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        if name.startswith("contact_head."):
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
