"""Progress bars on stderr for work that takes more than a moment (hidden when not a TTY)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], label: str, enabled: bool = True) -> Iterator[T]:
    """Wrap `items` in a tqdm bar that appears only after 1 s and only on a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=label, delay=1.0, leave=False, file=sys.stderr)


class CountProgress:
    """A bar (tqdm, on a terminal, after `delay` s) over things (devices, bytes) that is told
    the absolute count done."""

    def __init__(self, total: int, label: str, unit: str, enabled: bool = True,
                 delay: float = 0.0) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=unit, unit_scale=unit == "B",
                            delay=delay, leave=False, file=sys.stderr)

    def set(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ByteProgress(CountProgress):
    """A bytes bar, shown after 1 s."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        super().__init__(total, label, "B", enabled, delay=1.0)


class RunProgress:
    """One bar over every quantise-and-evaluate run of an analysis or search, with an ETA
    (tqdm, on a terminal). `advance(label)` after each run shows which plan was just measured."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="run", leave=False, file=sys.stderr,
                            bar_format="{desc}: {n}/{total} runs [{elapsed}<{remaining}] {postfix}")

    def grow(self, runs: int) -> None:
        """`runs` more than the bar was made for (decided once the work is under way)."""
        if self.bar is not None and runs:
            self.bar.total += runs
            self.bar.refresh()

    def advance(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label[:40], refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
