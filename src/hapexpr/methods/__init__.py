"""Methods: one module each, registered in one place (:mod:`hapexpr.methods.registry`).

>>> from hapexpr.methods import build
>>> method = build("elastic-net", {"cis_window": 1_000_000})
"""

from hapexpr.methods.base import NEEDS, GeneModel, Method, Options, option
from hapexpr.methods.registry import build, get, method_names, methods, register, unregister

__all__ = [
    "NEEDS",
    "GeneModel",
    "Method",
    "Options",
    "build",
    "get",
    "method_names",
    "methods",
    "option",
    "register",
    "unregister",
]
