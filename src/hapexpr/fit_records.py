"""The fits recorded in a study (``models/<name>/fit.json``) and the methods rebuilt from them.

``stack``, ``fit-final``, ``predict``, ``explain`` and ``report`` use a fit by its name: the
method and options come from that fit's own record, never rebuilt from other flags.
"""

from __future__ import annotations

import json

from hapexpr.errors import StudyError
from hapexpr.methods import registry
from hapexpr.methods.base import Method
from hapexpr.methods.registry import build
from hapexpr.study import Study


def fit_record(study: Study, name: str) -> dict:
    """The fit.json of the fit named ``name`` (a ``-heldout`` companion name resolves to its fit)."""
    for candidate in _candidates(study, name):
        path = study.path / "models" / candidate / "fit.json"
        if path.exists():
            record = json.loads(path.read_text())
            if name in record.get("names", [candidate]):
                return record
    raise StudyError(
        f"no fit named {name!r} in this study",
        path=study.path / "models",
        hint=f"fitted: {', '.join(fitted_names(study)) or 'none'}; run `hapexpr fit` first",
    )


def _candidates(study: Study, name: str) -> list[str]:
    out = [name]
    for d in sorted((study.path / "models").glob("*/fit.json")):
        if d.parent.name != name:
            out.append(d.parent.name)
    return out


def fitted_names(study: Study) -> list[str]:
    """Names of every completed fit in the study, with the names each writes rows under."""
    out = []
    for path in sorted((study.path / "models").glob("*/fit.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if record.get("complete"):
            out += record.get("names", [path.parent.name])
    return out


def load_fitted(study: Study, name: str) -> Method:
    """The method of the fit named ``name``, rebuilt from its own fit.json and bound to the study.

    Fits recorded before the method registry (no ``method`` in fit.json) are refused with what
    to do: their options cannot be read back reliably.
    """
    record = fit_record(study, name)
    if "method" not in record or record.get("format") is None:
        raise StudyError(
            f"the fit {name!r} was made by an older hapexpr (no method record in its fit.json)",
            path=study.path / "models" / name / "fit.json",
            hint=f"refit it with this version: `hapexpr fit {study.path} --method {name} --overwrite`",
        )
    m = build(
        record["method"],
        record.get("options"),
        fit_name=record.get("name", name),
        where=f"{study.path / 'models' / name / 'fit.json'}",
        provider=record.get("provider"),
    )
    m.bind(study)
    if record.get("resolved") and m.resolved != record["resolved"]:
        # The study changed under the fit (e.g. a newer embedding store): use what it used.
        m.resolved = record["resolved"]
    return m


def fitted_or_default(study: Study, name: str, options: dict | None = None, *, where: str = "options") -> Method:
    """The method of the fit named ``name``; when the study has no such fit and ``name`` is a
    registered method, that method with its default options. ``options`` are put over the fit's
    (or the defaults') before the method is bound to the study, so e.g. a stack given its
    ``base`` is never first bound with bases it was not given."""
    default = registry.from_default_name(name)
    if default is not None and not (study.path / "models" / name / "fit.json").exists():
        cls, defaults = default
        return build(cls.name, {**defaults, **(options or {})}, fit_name=name, where=where).bind(study)
    m = load_fitted(study, name)
    if options:
        m = build(m.name, {**m.options.to_dict(), **options}, fit_name=m.fit_name, where=where).bind(study)
    return m


def fitted_method_name(study: Study, name: str) -> str:
    """The registered method of the fit named ``name`` (or of the method whose default name it
    is), without building or binding it."""
    default = registry.from_default_name(name)
    if default is not None and not (study.path / "models" / name / "fit.json").exists():
        return default[0].name
    return fit_record(study, name).get("method") or load_fitted(study, name).name  # the latter explains old fits


def reference_fit(study: Study, names) -> str | None:
    """Among the fits ``names``, the first (by name) whose method is the field's reference
    (``Method.reference``: the elastic net), or None."""
    refs = []
    for name in sorted(set(names)):
        try:
            record = fit_record(study, name)
        except StudyError:
            continue
        if record.get("method") in registry.method_names() and registry.get(record["method"]).reference:
            refs.append(name)
    return refs[0] if refs else None
