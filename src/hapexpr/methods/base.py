"""What a method is: options, what it needs from a study, features for a gene, an estimator.

A method is one class in one module (under ``hapexpr.methods``, or in another package named by
an entry point of the group ``hapexpr.methods``), registered with
:func:`hapexpr.methods.register`. Every command (``fit``, ``fit-final``, ``predict``,
``explain``, ``report``, ``run``) asks the registry; none of them knows a method's name.

- ``Options``: a frozen dataclass of the method's options. The CLI flags of ``hapexpr fit``,
  the ``options`` of ``models/<name>/fit.json`` and the report's provenance are all derived from
  it (field ``metadata["help"]`` is the flag's help text).
- ``needs``: what the study must hold (:data:`NEEDS`); checked before anything runs.
- ``features(cohort, gene_id)``: (samples, ...) features of a cohort's people for one gene. A
  cohort is the study's own people (:class:`hapexpr.cohort.StudyCohort`) or the people of a new
  VCF (:class:`hapexpr.cohort.NewCohort`); both go through the same code, so ``predict`` builds a
  new person's features exactly as ``fit`` built a study person's.
- ``estimator(seed)``: a fresh scikit-learn-style estimator (``fit``/``predict``) that can
  ``save(directory)`` itself, and ``load_estimator(directory)`` to read one back.

A *variant* is the same method under other options, stored under its own name (``--name``, or
:meth:`Method.default_name`), so e.g. ``elastic-net`` and ``elastic-net-6kb`` live side by side.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from hapexpr.errors import InputError
from hapexpr.typecheck import check_fields

# What a method may need from a study: phased haplotype sequences of the window (a FASTA was
# given to prepare), stored embeddings of the window sequences, or cis-window genotypes.
NEEDS = ("sequence", "embeddings", "genotypes")


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field of a method's options, with its ``--flag`` help text."""
    return field(default=default, metadata={"help": help, **metadata})


def flag_type(hint: Any) -> Any:
    """The type a ``--flag`` of an option with type ``hint`` carries: ``X`` of ``X | None``,
    ``str`` (comma-separated) for a tuple, any other hint as it is."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and args else hint
    return str if typing.get_origin(base) is tuple else base


@dataclass(frozen=True)
class Options:
    """Options every method has. Subclasses add their own (frozen dataclasses, JSON types)."""

    seed: int = option(0, "Seed of every model fit (the folds come from the study).")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict, *, where: str = "options") -> Options:
        """Options from a dict (fit.json, a config file, CLI flags); unknown keys are refused,
        lists become tuples, missing keys take the defaults."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise InputError(
                f"unknown option(s) {', '.join(unknown)} in {where}",
                hint=f"this method's options: {', '.join(sorted(names))}",
            )
        out = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        check_fields(cls, out, where)
        return cls(**out)


class GeneModel(Protocol):
    """A scikit-learn-style estimator for one gene: parameters in ``__init__``, learned
    attributes with a trailing underscore, ``fit`` returns ``self``; it saves itself in a
    self-describing unpickled format and a classmethod ``load`` reads it back."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> GeneModel: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...


class Method:
    """Base class of every method; subclass it (or one of the bases exported from
    :mod:`hapexpr.methods`) in one module and decorate with ``@register`` or name it by an
    entry point.

    Class attributes: ``name`` (the registry key and default name in predictions.tsv),
    ``Options``, ``needs`` (subset of :data:`NEEDS`), ``summary`` (one line for help and the
    report), ``order`` (where it is listed; lower first) and ``reference`` (True for the field's
    baseline that other methods are compared against first in the report).
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    needs: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    order: ClassVar[int] = 100
    reference: ClassVar[bool] = False
    # Whether fit-final, predict and explain can use it (one estimator per gene on all people).
    final: ClassVar[bool] = True
    # Whether fit-final, predict and explain use instead one model shared by every gene
    # (:meth:`fit_final_shared`; ``final`` is then False: there is no per-gene estimator).
    shared_final: bool = False

    def __init__(self, options: Options | None = None, *, name: str | None = None) -> None:
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, got {type(self.options).__name__}")
        self.fit_name = name or self.default_name(self.options)
        self.study = None
        self.resolved: dict = {}

    @classmethod
    def default_name(cls, options: Options) -> str:
        """The name a fit with these options gets in predictions.tsv when ``--name`` is not given."""
        return cls.name

    @classmethod
    def options_for_name(cls, name: str) -> dict | None:
        """The options whose default name is ``name`` (the inverse of :meth:`default_name`), or
        None; lets ``fit-final --method enformer-ridge`` work without a cross-validated fit."""
        return {} if name == cls.name else None

    def names(self) -> list[str]:
        """Every name this fit writes rows under in predictions.tsv (multi-gene adds one)."""
        return [self.fit_name]

    # -- binding to a study ------------------------------------------------------------------
    def bind(self, study) -> Method:
        """Check the study holds what the method needs and resolve what the fit depends on in
        it (``resolved``: e.g. which embedding store), recorded in fit.json and in the key."""
        study.require(self.needs, self.fit_name)
        self.study = study
        self.resolved = self.resolve(study)
        return self

    def resolve(self, study) -> dict:
        """Study-dependent identity of the fit (JSON); override when there is any."""
        return {}

    def prepare(self, study, *, progress: bool) -> None:
        """Work to do once before the per-gene loop (e.g. run a model over every gene)."""

    def heritability_column(self, study) -> str:
        """The cis-heritability of ``heritability.tsv`` that bounds this fit's r, by the variants
        its features can see: ``h2_cis`` (the study's sequence window; the default) or
        ``h2_cis_wide`` (the study's +-cis_window genotype store). ``evaluate`` reports r over
        its square root, so a method reading +-1 Mb is not judged against the window's h2."""
        return "h2_cis"

    def models_used(self) -> list[dict]:
        """Provenance: ``[{"description": str, "tiny": bool}]`` for every model behind the fit."""
        return []

    # -- per gene ----------------------------------------------------------------------------
    def features(self, cohort, gene_id: str) -> np.ndarray:
        """(samples, ...) features of ``cohort``'s people for one gene, in cohort sample order.
        Never looks at expression."""
        raise NotImplementedError

    def estimator(self, seed: int) -> GeneModel:
        raise NotImplementedError

    def load_estimator(self, directory: Path) -> GeneModel:
        raise NotImplementedError

    def usable(self, X: np.ndarray) -> bool:
        """False when the features carry nothing to learn from (e.g. no variant): the gene then
        gets no prediction from this method instead of a meaningless one."""
        return True

    def explain(self, cohort, gene_id: str, est) -> pd.DataFrame:
        """Per-variant effects of ``gene_id``'s window variants on ``est``'s predictions
        (columns ``hapexpr.explain.EFFECT_COLUMNS`` plus any of the method's own)."""
        raise InputError(f"{self.fit_name} cannot explain its predictions per variant")

    # -- a whole study at once (optional) ----------------------------------------------------
    def fit_study(self, study, run, *, progress: bool) -> pd.DataFrame | None:
        """Fit every gene at once instead of the per-gene loop (multi-gene models, stacking);
        return the rows of predictions.tsv, or None to use the per-gene loop."""
        return None

    def fit_final_genes(self, study, genes: list[str]):
        """Fit the final models of ``genes`` together (e.g. many small models at once on a
        GPU): an iterator of ``(gene_id, estimator or None)``, or None to fit them one gene at
        a time (:func:`hapexpr.engines.fit_final_one`)."""
        return None

    def final_requires(self) -> list[str]:
        """Names of the other fits whose final fits this method's final fit is built on (a
        stack's bases). ``fit-final`` makes each one first when it is missing, with that fit's
        own options, before it takes the study's lock; raise a StudyError naming any that cannot
        have one."""
        return []

    def fit_final_shared(self, study, directory: Path, *, progress: bool) -> dict:
        """With ``shared_final``: fit the one final model on every individual of every gene and
        save it into ``directory``; returns what ``final.json`` records of it (JSON)."""
        raise NotImplementedError(f"{self.fit_name} has no shared final model")

    def load_final_shared(self, directory: Path):
        """The model :meth:`fit_final_shared` saved; its ``estimator(gene_id)`` is a per-gene
        estimator (``predict(X)``) for a study gene or a gene outside the study."""
        raise NotImplementedError(f"{self.fit_name} has no shared final model")

    def fit_record(self) -> dict:
        """What fit.json records: the method, its options and what was resolved in the study."""
        return {"method": self.name, "options": self.options.to_dict(), "resolved": self.resolved}
