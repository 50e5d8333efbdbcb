"""Where collected results live, behind one small `ResultStore` interface. SQLite by default:
`report_id` is the primary key, so a redelivered result never becomes a second row."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol, cast

from edgeq.errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    report_id     TEXT PRIMARY KEY,
    device        TEXT NOT NULL,
    type          TEXT NOT NULL,
    cmd_id        TEXT,
    ts            REAL,
    received_ts   REAL,
    arch          TEXT,
    runtime       TEXT,
    model_name    TEXT,
    model_sha256  TEXT,
    p50_ms        REAL,
    p99_ms        REAL,
    energy_mj     REAL,
    metric        TEXT,
    value         REAL,
    exact_match   REAL,
    max_lsb       REAL,
    errors        INTEGER,
    payload       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_device_model ON reports (device, model_sha256, ts);
CREATE TABLE IF NOT EXISTS quarantine (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ts   REAL NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    payload       BLOB NOT NULL
);
"""
QUARANTINE_KEEP_BYTES = 64 * 1024  # of each refused payload, for inspection
QUARANTINE_MAX_ROWS = 10_000  # oldest dropped past this


class ResultStore(Protocol):
    """Stores result messages exactly once each and reads them back."""

    def add(self, results: list[dict[str, Any]]) -> int: ...

    def results(self, device: str | None = None) -> list[dict[str, Any]]: ...

    def quarantine(self, entries: list[tuple[str, str, bytes]]) -> None: ...

    def close(self) -> None: ...


def _row(r: dict[str, Any]) -> tuple[Any, ...]:
    latency, power, acc = r.get("latency") or {}, r.get("power") or {}, r.get("accuracy") or {}
    task, agree = acc.get("task") or {}, acc.get("agreement") or {}
    model, runtime = r["model"], r["runtime"]
    return (r["report_id"], r["device"], r["type"], r["cmd_id"], r["ts"], time.time(), r["arch"],
            f"{runtime.get('name')} {runtime.get('version')}", model.get("name"), model["sha256"],
            latency.get("p50_ms"), latency.get("p99_ms"), power.get("energy_per_inference_mj"),
            task.get("metric"), task.get("value"), agree.get("exact_match_rate"),
            agree.get("max_abs_diff_lsb"), len(r.get("errors") or []),
            json.dumps(r, separators=(",", ":")))


class SQLiteStore:
    """A SQLite file (WAL mode: `edgeq reports` can read while a collector writes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._setup(deadline=time.monotonic() + 30)
        except (sqlite3.Error, OSError) as e:
            raise InputError(f"{path}: cannot open as a SQLite result store ({e})") from e

    def _setup(self, deadline: float) -> None:
        # Two collectors starting on one new file race for the journal-mode switch, which
        # SQLite answers with "database is locked" at once instead of waiting: retry.
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def add(self, results: list[dict[str, Any]]) -> int:
        """Insert in one transaction; returns how many were new (duplicates are skipped)."""
        with self.db:
            before = self.db.total_changes
            self.db.executemany(f"INSERT OR IGNORE INTO reports VALUES ({','.join('?' * 19)})",
                                [_row(r) for r in results])
            return self.db.total_changes - before

    def quarantine(self, entries: list[tuple[str, str, bytes]]) -> None:
        """Keep refused messages (topic, reason, payload) for inspection, bounded in size."""
        with self.db:
            self.db.executemany(
                "INSERT INTO quarantine (received_ts, topic, reason, bytes, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                [(time.time(), t[:512], r[:1000], len(p), bytes(p[:QUARANTINE_KEEP_BYTES]))
                 for t, r, p in entries])
            self.db.execute("DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
                            (QUARANTINE_MAX_ROWS,))

    def quarantined(self) -> list[dict[str, Any]]:
        """Refused messages, newest first."""
        rows = self.db.execute("SELECT received_ts, topic, reason, bytes FROM quarantine "
                               "ORDER BY id DESC")
        return [{"received_ts": ts, "topic": t, "reason": r, "bytes": n} for ts, t, r, n in rows]

    def results(self, device: str | None = None) -> list[dict[str, Any]]:
        """Stored result messages, oldest first."""
        query, params = "SELECT payload FROM reports", cast(tuple[str, ...], ())
        if device:
            query, params = query + " WHERE device = ?", (device,)
        rows = self.db.execute(query + " ORDER BY ts, report_id", params)
        out = []
        for (payload,) in rows:  # rows stored by older collectors may not parse: skip them
            try:
                out.append(json.loads(payload))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        self.db.close()


def open_store(path: Path, must_exist: bool = False) -> SQLiteStore:
    """The store at `path` (a SQLite file)."""
    if must_exist and not Path(path).is_file():
        raise InputError(f"result store not found: {path} (run `edgeq collect --db {path}` first)")
    return SQLiteStore(path)
