"""How an estimator saves itself: ``estimator.json`` + ``weights.safetensors``, never a pickle.

``estimator.json`` names the estimator's kind and format, its constructor parameters and its
scalar learned attributes; the arrays go to a safetensors file (numpy, no code on load). An
estimator's own ``save``/``load`` call these two functions, so nothing outside an estimator
sets its learned attributes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hapexpr.errors import StudyError
from hapexpr.io.atomic import atomic_path, write_json

META = "estimator.json"
WEIGHTS = "weights.safetensors"


def save_estimator(
    directory: str | Path, *, kind: str, params: dict, learned: dict, arrays: dict[str, np.ndarray]
) -> None:
    """Write one estimator: ``kind`` (e.g. ``hapexpr.elastic-net/1``), JSON ``params`` and
    ``learned`` scalars/lists, and named numeric ``arrays``."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    write_json(directory / META, {"kind": kind, "params": params, "learned": learned})


def load_estimator(directory: str | Path, *, kind: str) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(params, learned, arrays) of an estimator saved as ``kind``; a StudyError otherwise."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta_path = directory / META
    if not meta_path.exists():
        raise StudyError(
            "no saved estimator here", path=directory, hint="fit it again (`hapexpr fit-final ... --overwrite`)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != kind:
        raise StudyError(
            f"saved estimator is {meta.get('kind')!r}, expected {kind!r}",
            path=meta_path,
            hint="fit it again with this version of hapexpr (`hapexpr fit-final ... --overwrite`)",
        )
    arrays = load_file(str(directory / WEIGHTS)) if (directory / WEIGHTS).exists() else {}
    return meta.get("params", {}), meta.get("learned", {}), arrays


def finite_or_none(x) -> float | None:
    """A float for JSON: NaN and infinities become null."""
    x = float(x)
    return x if np.isfinite(x) else None


def none_to_nan(x) -> float:
    return float("nan") if x is None else float(x)
