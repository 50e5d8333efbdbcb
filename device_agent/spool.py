"""Results waiting for the broker: written to disk before they are published, deleted only
when the broker acknowledges them, resent after a reconnect or a restart. Bounded: past
`limit` files the oldest are dropped, and the drop is counted."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


class Spool:
    """A directory of pending result messages, one JSON file per report_id."""

    def __init__(self, directory: Path, limit: int = 1000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self.dropped = 0

    def _path(self, report_id: str) -> Path:
        return self.dir / f"{report_id}.json"

    def put(self, message: dict[str, Any]) -> None:
        """Persist `message` (atomically) before it is published."""
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.dir)
        with os.fdopen(fd, "w") as f:
            json.dump(message, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path(message["report_id"]))
        self._enforce_limit()

    def ack(self, report_id: str) -> None:
        """The broker has it: forget it."""
        self._path(report_id).unlink(missing_ok=True)

    def pending(self) -> list[dict[str, Any]]:
        """Every spooled message, oldest first (unreadable files are skipped and removed)."""
        messages = []
        for path in self._files():
            try:
                messages.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        return messages

    def __len__(self) -> int:
        return len(self._files())

    def _files(self) -> list[Path]:
        files = [p for p in self.dir.glob("*.json")]
        return sorted(files, key=lambda p: (_mtime(p), p.name))

    def _enforce_limit(self) -> None:
        files = self._files()
        for path in files[: max(0, len(files) - self.limit)]:
            path.unlink(missing_ok=True)
            self.dropped += 1


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return time.time()
