"""Results waiting for a collector: written to disk before they are published, deleted only when
a collector acknowledges storing them (its `ack`; a broker's PUBACK is not enough), resent after
a reconnect, a restart, or periodically. Bounded: past `limit` files the oldest are dropped, and
the drop is counted. An entry that is not a valid result (written by an older agent, corrupted
on disk) is moved to `rejected/` with the reason, counted, and never retried."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .protocol import ProtocolError, check_result, encode

REJECTED_KEEP = 100  # moved-aside entries kept for inspection


class Spool:
    """A directory of pending result messages, one JSON file per report_id."""

    def __init__(self, directory: Path, limit: int = 1000) -> None:
        self.dir = Path(directory)
        self.rejected_dir = self.dir / "rejected"
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self.dropped = 0
        self.rejected = len(list(self.rejected_dir.glob("*.json")))

    def _path(self, report_id: str) -> Path:
        return self.dir / f"{report_id}.json"

    def put(self, message: dict[str, Any]) -> None:
        """Persist `message` (atomically, fsynced) before it is published. It must be a valid
        result (check_result) that encodes as JSON: the spool never holds what it cannot send."""
        check_result(message)
        payload = encode(message)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(message["report_id"]))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._enforce_limit()

    def ack(self, report_id: str) -> None:
        """A collector stored it: forget it."""
        self._path(report_id).unlink(missing_ok=True)

    def pending(self) -> list[dict[str, Any]]:
        """Every spooled message that is a valid result, oldest first; the others are moved
        aside (with the reason) and never returned again."""
        messages = []
        for path in self._files():
            try:
                message = json.loads(path.read_text())
                check_result(message)
                encode(message)
            except (OSError, ValueError, ProtocolError, TypeError) as e:
                self._set_aside(path, str(e))
                continue
            messages.append(message)
        return messages

    def move_aside(self, report_id: str, why: str) -> None:
        """Take an entry out of the resend cycle for good."""
        path = self._path(report_id)
        if path.exists():
            self._set_aside(path, why)

    def _set_aside(self, path: Path, why: str) -> None:
        target = self.rejected_dir / path.name
        try:
            os.replace(path, target)
            target.with_suffix(".why").write_text(why[:2000] + "\n")
        except OSError:
            path.unlink(missing_ok=True)
        self.rejected += 1
        old = sorted(self.rejected_dir.glob("*.json"), key=_mtime)
        for stale in old[: max(0, len(old) - REJECTED_KEEP)]:
            stale.unlink(missing_ok=True)
            stale.with_suffix(".why").unlink(missing_ok=True)

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
