"""Shared helpers for reading the user's tab-separated tables with errors that name the record."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pandas as pd

from hapexpr.errors import InputError


def read_tsv(path: Path, *, what: str, comment: str | None = None, header: int | None = 0) -> pd.DataFrame:
    """Read a (possibly gzipped) tab-separated file as strings, turning parser failures into
    an :class:`InputError` that names the file and, where pandas says it, the line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"the {what} file does not exist", path=path)
    try:
        df = pd.read_csv(
            path, sep="\t", dtype=str, comment=comment, header=header, keep_default_na=False,
            compression="gzip" if _is_gzip(path) else None,
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"the {what} file is empty", path=path) from None
    except pd.errors.ParserError as exc:
        raise InputError(
            f"the {what} file could not be parsed as tab-separated columns ({_first_line(exc)})",
            path=path, hint="check that every line has the same number of tab-separated fields",
        ) from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise InputError(
            f"the {what} file is truncated or corrupt ({exc})", path=path,
            hint="re-create or re-download the file",
        ) from None
    if df.empty:
        raise InputError(f"the {what} file has no data rows", path=path)
    _check_field_counts(path, what=what, comment=comment)
    if header is not None:
        # pandas silently renames duplicate columns (S1, S1.1): refuse them instead.
        df.columns = _header_fields(path, comment=comment)
    return df


def _lines(path: Path):
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt") as fh:
        yield from fh


def _header_fields(path: Path, *, comment: str | None) -> list[str]:
    for line in _lines(path):
        if comment and line.startswith(comment):
            continue
        return line.rstrip("\r\n").split("\t")
    return []


def _check_field_counts(path: Path, *, what: str, comment: str | None) -> None:
    """pandas pads short rows with NaN; a row with a missing field is an error, not missing data."""
    expected = None
    for lineno, line in enumerate(_lines(path), 1):
        if (comment and line.startswith(comment)) or not line.strip():
            continue
        n = line.rstrip("\r\n").count("\t") + 1
        if expected is None:
            expected = n
        elif n != expected:
            raise InputError(
                f"the {what} file has {n} tab-separated fields on this line but {expected} on its first line",
                path=path, record=f"line {lineno}",
                hint="check that every line has the same number of tab-separated fields",
            )


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[-1]


def to_numeric_matrix(df: pd.DataFrame, *, path: Path, what: str, row_name: str) -> pd.DataFrame:
    """Convert a string table (index = row ids) to float64, naming the first bad or missing cell."""
    out = df.apply(pd.to_numeric, errors="coerce").astype("float64")
    bad = out.isna().to_numpy()
    if bad.any():
        r, c = (int(i[0]) for i in bad.nonzero())
        value = df.iat[r, c]
        kind = "missing (NaN)" if value.strip().lower() in {"", "na", "nan", "."} else f"not a number ({value!r})"
        raise InputError(
            f"the {what} value for {row_name} {df.index[r]}, sample {df.columns[c]} is {kind}",
            path=path, record=f"{row_name} {df.index[r]}",
            hint=f"every {what} value must be a finite number; impute or drop that {row_name} first",
        )
    return out


def check_unique(ids: pd.Index | list, *, path: Path, what: str) -> None:
    """Refuse duplicate ids, naming the first one."""
    s = pd.Series(list(ids))
    dup = s[s.duplicated()]
    if len(dup):
        raise InputError(
            f"{what} {dup.iloc[0]!r} appears more than once", path=path, record=f"{what} {dup.iloc[0]}",
            hint=f"each {what} must be unique; remove or rename the duplicates",
        )
