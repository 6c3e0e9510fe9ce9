"""hapexpr: predict each person's gene expression from their own DNA."""

__version__ = "0.1.0"
