"""The console every stage reports to (stderr, so stdout stays for data) and its per-gene
progress bar."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from rich.console import Console

console = Console(stderr=True, highlight=False)
T = TypeVar("T")


def track_genes(items: Iterable[T], label: str, *, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing ``label ━━━ done/total elapsed remaining`` on stderr; the
    bar advances once the caller's work on an item is done and vanishes when the loop ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total = len(items) if isinstance(items, Sized) else None
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=not enabled, transient=True) as bar:
        task = bar.add_task("genes", total=total)
        for item in items:
            yield item
            bar.advance(task)
