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


class ByteProgress:
    """A bytes bar (tqdm, on a terminal, after 1 s) that is told the absolute count."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, delay=1.0,
                            leave=False, file=sys.stderr)

    def set(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunProgress:
    """One bar over every quantise-and-evaluate run of an analysis or search, with an ETA
    (tqdm, on a terminal). `advance(label)` after each run shows which plan was just measured."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="run", leave=False, file=sys.stderr,
                            bar_format="{desc}: {n}/{total} runs [{elapsed}<{remaining}] {postfix}")

    def advance(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label[:40], refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
