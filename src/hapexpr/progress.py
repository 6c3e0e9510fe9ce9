"""The console every stage reports to (stderr, so stdout stays for data) and its per-gene
progress bar."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from rich.console import Console

console = Console(stderr=True, highlight=False)
T = TypeVar("T")


def track_genes(
    items: Iterable[T], label: str, *, enabled: bool = True, total: int | None = None, unit: str = "genes"
) -> Iterator[T]:
    """Yield ``items`` while showing progress on stderr; it advances once the caller's work on an
    item is done. On a terminal: a bar ``label ━━━ done/total elapsed remaining`` that vanishes
    when the loop ends. Otherwise (a log file, a batch job): a line every 5% of the items,
    ``label: done/total genes (pct), rate, ETA``, and a last one at the end."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    total = len(items) if total is None and isinstance(items, Sized) else total
    if enabled and not console.is_terminal:
        yield from _log_lines(items, label, total, unit)
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    ) as bar:
        task = bar.add_task("genes", total=total)
        for item in items:
            yield item
            bar.advance(task)


def _log_lines(items: Iterable[T], label: str, total: int | None, unit: str) -> Iterator[T]:
    start = time.perf_counter()
    step = max(1, (total or 0) // 20)
    done = 0
    for item in items:
        yield item
        done += 1
        if done % step == 0 or done == total:
            console.print(progress_line(label, done, total, time.perf_counter() - start, unit), markup=False)


def progress_line(label: str, done: int, total: int | None, seconds: float, unit: str = "genes") -> str:
    """``label: 30/608 genes (4.9%), 2.10 genes/s, ETA 4m 35s`` (no ETA without a total)."""
    rate = done / seconds if seconds > 0 else float("inf")
    text = f"{label}: {done}/{total if total is not None else '?'} {unit}"
    if total:
        text += f" ({100 * done / total:.1f}%)"
    text += f", {rate:.2f} {unit}/s"
    if total and rate > 0 and done < total:
        left = (total - done) / rate
        text += f", ETA {int(left // 60)}m {int(left % 60):02d}s"
    return text
