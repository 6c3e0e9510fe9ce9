"""Methods: one module each, registered in one place (:mod:`hapexpr.methods.registry`).

>>> from hapexpr.methods import build
>>> method = build("elastic-net", {"cis_window": 1_000_000})

What a plugin subclasses (``docs/methods.md``, writing a plugin): :class:`Method` (features of
its own), :class:`DosageMethod` (the study's cis dosages), :class:`HaplotypeMethod` (features
computed from each haplotype's sequence) or :class:`EmbeddingMethod` (stored embeddings), with
``Options`` a frozen dataclass of :class:`Options` (or of :class:`DosageOptions` /
:class:`EmbeddingOptions`) whose fields are made with :func:`option`.
"""

from hapexpr.methods.base import NEEDS, GeneModel, Method, Options, option
from hapexpr.methods.dosage import AlignedDosages, DosageMethod, DosageOptions
from hapexpr.methods.embedding import EmbeddingMethod, EmbeddingOptions
from hapexpr.methods.haplotype import HaplotypeMethod
from hapexpr.methods.registry import build, get, method_names, methods, provider, register, unregister

__all__ = [
    "NEEDS",
    "AlignedDosages",
    "DosageMethod",
    "DosageOptions",
    "EmbeddingMethod",
    "EmbeddingOptions",
    "GeneModel",
    "HaplotypeMethod",
    "Method",
    "Options",
    "build",
    "get",
    "method_names",
    "methods",
    "option",
    "provider",
    "register",
    "unregister",
]
