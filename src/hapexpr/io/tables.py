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
            path,
            sep="\t",
            dtype=str,
            comment=comment,
            header=header,
            keep_default_na=False,
            compression="gzip" if _is_gzip(path) else None,
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"the {what} file is empty", path=path) from None
    except pd.errors.ParserError as exc:
        raise InputError(
            f"the {what} file could not be parsed as tab-separated columns ({_first_line(exc)})",
            path=path,
            hint="check that every line has the same number of tab-separated fields",
        ) from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise InputError(
            f"the {what} file is truncated or corrupt ({exc})",
            path=path,
            hint="re-create or re-download the file",
        ) from None
    if df.empty:
        raise InputError(f"the {what} file has no data rows", path=path)
    _check_field_counts(path, what=what, comment=comment)
    if header is not None:
        # pandas silently renames duplicate columns (S1, S1.1): refuse them instead.
        df.columns = _header_fields(path, comment=comment)
    return df


def read_matrix_text(path: Path, *, what: str, skip: int = 0, tabs_only: bool = False) -> pd.DataFrame:
    """Read a header + rows text table (possibly gzipped) as strings, tab- or whitespace-separated.

    Tabs are used when every line has the same number of tab-separated fields; otherwise, unless
    ``tabs_only``, runs of spaces and tabs separate fields (QTLtools writes covariates with
    spaces, and some BEDs mix both). A header one field shorter than the rows (R's
    ``write.table`` habit: no name over the row ids) gets an empty first name. ``skip`` lines
    before the header are ignored (GCT's ``#1.2`` and dimension lines).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"the {what} file does not exist", path=path)
    try:
        sep, header = _sniff(path, what=what, skip=skip, tabs_only=tabs_only)
        df = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            header=None,
            skiprows=skip + 1,
            keep_default_na=False,
            compression="gzip" if _is_gzip(path) else None,
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"the {what} file has no data rows", path=path) from None
    except pd.errors.ParserError as exc:
        raise InputError(f"the {what} file could not be parsed ({_first_line(exc)})", path=path) from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise InputError(
            f"the {what} file is truncated or corrupt ({exc})",
            path=path,
            hint="re-create or re-download the file",
        ) from None
    if df.empty:
        raise InputError(f"the {what} file has no data rows", path=path)
    if len(header) == df.shape[1] - 1:
        header = [""] + header
    df.columns = header
    return df


def _sniff(path: Path, *, what: str, skip: int, tabs_only: bool) -> tuple[str, list[str]]:
    """The separator (``\\t`` or whitespace) and the header fields; refuses ragged rows."""
    tab_counts, ws_counts, header_line = [], [], None
    for lineno, line in enumerate(_lines(path), 1):
        if lineno <= skip or not line.strip():
            continue
        line = line.rstrip("\r\n")
        if header_line is None:
            header_line = line
        tab_counts.append((lineno, line.count("\t") + 1))
        ws_counts.append((lineno, len(line.split())))
    if header_line is None:
        raise InputError(f"the {what} file is empty", path=path)
    for counts, sep in [(tab_counts, "\t")] if tabs_only else [(tab_counts, "\t"), (ws_counts, r"\s+")]:
        rows = {n for _, n in counts[1:]}
        single = sep == "\t" and not tabs_only and max(n for _, n in counts) == 1
        if not single and len(rows) <= 1 and (not rows or counts[0][1] in (min(rows), min(rows) - 1)):
            return sep, header_line.split("\t") if sep == "\t" else header_line.split()
    header_n, data = tab_counts[0][1], tab_counts[1:]
    lineno, n = next(((i, k) for i, k in data if k != data[0][1]), data[0] if data else tab_counts[0])
    expected, where = (
        (data[0][1], f"line {data[0][0]}") if data[0][1] in (header_n, header_n + 1) else (header_n, "its header line")
    )
    if lineno == data[0][0]:  # the first data line already disagrees with the header
        n, expected, where = data[0][1], header_n, "its header line"
    raise InputError(
        f"the {what} file has {n} tab-separated fields on this line but {expected} on {where}"
        + ("" if tabs_only else ", and splitting on spaces does not give every line the same count either"),
        path=path,
        record=f"line {lineno}",
        hint="check that every line has the same number of tab-separated fields",
    )


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
                path=path,
                record=f"line {lineno}",
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
            path=path,
            record=f"{row_name} {df.index[r]}",
            hint=f"every {what} value must be a finite number; impute or drop that {row_name} first",
        )
    return out


def check_unique(ids: pd.Index | list, *, path: Path, what: str) -> None:
    """Refuse duplicate ids, naming the first one."""
    s = pd.Series(list(ids))
    dup = s[s.duplicated()]
    if len(dup):
        raise InputError(
            f"{what} {dup.iloc[0]!r} appears more than once",
            path=path,
            record=f"{what} {dup.iloc[0]}",
            hint=f"each {what} must be unique; remove or rename the duplicates",
        )
