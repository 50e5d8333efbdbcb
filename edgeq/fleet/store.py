"""Where collected results, rollout state and pins live, behind one small `ResultStore`
interface: a SQLite file by default, or one PostgreSQL database that many collectors and hosts
share (`--db postgresql://...`). `report_id` is the primary key, so a redelivered result never
becomes a second row."""

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
    ts            DOUBLE PRECISION,
    received_ts   DOUBLE PRECISION,
    arch          TEXT,
    runtime       TEXT,
    model_name    TEXT,
    model_sha256  TEXT,
    p50_ms        DOUBLE PRECISION,
    p99_ms        DOUBLE PRECISION,
    energy_mj     DOUBLE PRECISION,
    metric        TEXT,
    value         DOUBLE PRECISION,
    exact_match   DOUBLE PRECISION,
    max_lsb       DOUBLE PRECISION,
    errors        INTEGER,
    payload       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_device_model ON reports (device, model_sha256, ts);
CREATE TABLE IF NOT EXISTS quarantine (
    id            {serial},
    received_ts   DOUBLE PRECISION NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    payload       {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id            TEXT PRIMARY KEY,
    created       DOUBLE PRECISION NOT NULL,
    updated       DOUBLE PRECISION NOT NULL,
    state         TEXT NOT NULL,
    spec          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id    TEXT NOT NULL,
    device        TEXT NOT NULL,
    wave          INTEGER NOT NULL,
    state         TEXT NOT NULL,
    cmd_id        TEXT,
    previous      TEXT,
    updated       DOUBLE PRECISION NOT NULL,
    message       TEXT,
    PRIMARY KEY (rollout_id, device)
);
CREATE TABLE IF NOT EXISTS pins (
    scope         TEXT NOT NULL,
    name          TEXT NOT NULL,
    model_sha256  TEXT NOT NULL,
    reason        TEXT NOT NULL,
    ts            DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, name)
);
"""
QUARANTINE_KEEP_BYTES = 64 * 1024  # of each refused payload, for inspection
QUARANTINE_MAX_ROWS = 10_000  # oldest dropped past this


class ResultStore(Protocol):
    """Stores result messages exactly once each and reads them back."""

    where: str  # the store, in messages (a URL without its password)

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


class SQLStore:
    """What both stores share: the SQL (written with `?` placeholders, the subset SQLite and
    PostgreSQL agree on), results, quarantine, rollout state and pins. Subclasses open the
    connection and say how a transaction and a placeholder look."""

    placeholder = "?"
    where = ""  # the store, in messages
    db: Any  # a DB-API connection

    def _sql(self, query: str) -> str:
        return query.replace("?", self.placeholder)

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.db.execute(self._sql(query), params).fetchall())

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> int:
        """executemany in one transaction; how many rows it changed."""
        raise NotImplementedError

    def add(self, results: list[dict[str, Any]]) -> int:
        """Insert in one transaction; returns how many were new (duplicates are skipped).
        Rows go in report_id order: two collectors inserting overlapping batches then take
        their row locks in one order and never deadlock."""
        return self._many(f"INSERT INTO reports VALUES ({','.join('?' * 19)}) "
                          "ON CONFLICT (report_id) DO NOTHING",
                          sorted(_row(r) for r in results))

    def quarantine(self, entries: list[tuple[str, str, bytes]]) -> None:
        """Keep refused messages (topic, reason, payload) for inspection, bounded in size."""
        self._many("INSERT INTO quarantine (received_ts, topic, reason, bytes, payload) "
                   "VALUES (?, ?, ?, ?, ?)",
                   [(time.time(), t[:512], r[:1000], len(p), bytes(p[:QUARANTINE_KEEP_BYTES]))
                    for t, r, p in entries])
        self._many("DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
                   [(QUARANTINE_MAX_ROWS,)])

    def quarantined(self) -> list[dict[str, Any]]:
        """Refused messages, newest first."""
        rows = self._rows("SELECT received_ts, topic, reason, bytes FROM quarantine "
                          "ORDER BY id DESC")
        return [{"received_ts": ts, "topic": t, "reason": r, "bytes": n} for ts, t, r, n in rows]

    def results(self, device: str | None = None) -> list[dict[str, Any]]:
        """Stored result messages, oldest first."""
        query, params = "SELECT payload FROM reports", cast(tuple[str, ...], ())
        if device:
            query, params = query + " WHERE device = ?", (device,)
        out = []
        for (payload,) in self._rows(query + " ORDER BY ts, report_id", params):
            try:  # rows stored by older collectors may not parse: skip them
                out.append(json.loads(payload))
            except ValueError:
                continue
        return out

    def count(self) -> int:
        """How many results are stored."""
        return int(self._rows("SELECT COUNT(*) FROM reports")[0][0])

    # -- rollouts: a row per rollout (its spec as JSON) and per device (its state) -----------

    def save_rollout(self, rollout_id: str, state: str, spec: dict[str, Any]) -> None:
        """Create or update a rollout."""
        now = time.time()
        self._many("INSERT INTO rollouts VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                   "updated = excluded.updated, state = excluded.state, spec = excluded.spec",
                   [(rollout_id, now, now, state, json.dumps(spec, separators=(",", ":")))])

    def rollout(self, rollout_id: str) -> dict[str, Any] | None:
        """A rollout: id, created, updated, state, spec; None if unknown."""
        rows = self._rows("SELECT id, created, updated, state, spec FROM rollouts WHERE id = ?",
                          (rollout_id,))
        return _rollout_row(rows[0]) if rows else None

    def rollouts(self) -> list[dict[str, Any]]:
        """Every rollout, newest first."""
        return [_rollout_row(r) for r in
                self._rows("SELECT id, created, updated, state, spec FROM rollouts "
                           "ORDER BY created DESC")]

    def save_devices(self, rollout_id: str, devices: list[dict[str, Any]]) -> None:
        """Create or update the per-device rows of a rollout (device, wave, state, cmd_id,
        previous, message), in one transaction."""
        now = time.time()
        self._many("INSERT INTO rollout_devices VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT (rollout_id, device) DO UPDATE SET wave = excluded.wave, "
                   "state = excluded.state, cmd_id = excluded.cmd_id, "
                   "previous = excluded.previous, updated = excluded.updated, "
                   "message = excluded.message",
                   [(rollout_id, d["device"], d["wave"], d["state"], d.get("cmd_id"),
                     d.get("previous"), now, d.get("message")) for d in devices])

    def rollout_devices(self, rollout_id: str) -> list[dict[str, Any]]:
        """The per-device rows of a rollout, by wave then device."""
        rows = self._rows("SELECT device, wave, state, cmd_id, previous, updated, message "
                          "FROM rollout_devices WHERE rollout_id = ? ORDER BY wave, device",
                          (rollout_id,))
        keys = ("device", "wave", "state", "cmd_id", "previous", "updated", "message")
        return [dict(zip(keys, r)) for r in rows]

    # -- pins: a device or group held on one model -------------------------------------------

    def pin(self, scope: str, name: str, model_sha256: str, reason: str) -> None:
        """Hold device or group `name` (`scope`: device or group) on a model."""
        self._many("INSERT INTO pins VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, name) DO UPDATE "
                   "SET model_sha256 = excluded.model_sha256, reason = excluded.reason, "
                   "ts = excluded.ts", [(scope, name, model_sha256, reason, time.time())])

    def unpin(self, scope: str, name: str) -> bool:
        """Release a pin; False when there was none."""
        return self._many("DELETE FROM pins WHERE scope = ? AND name = ?", [(scope, name)]) > 0

    def pins(self) -> list[dict[str, Any]]:
        """Every pin."""
        keys = ("scope", "name", "model_sha256", "reason", "ts")
        return [dict(zip(keys, r)) for r in
                self._rows("SELECT scope, name, model_sha256, reason, ts FROM pins "
                           "ORDER BY scope, name")]

    def close(self) -> None:
        self.db.close()


def _rollout_row(row: tuple[Any, ...]) -> dict[str, Any]:
    rollout_id, created, updated, state, spec = row
    return {"id": rollout_id, "created": created, "updated": updated, "state": state,
            "spec": json.loads(spec)}


class SQLiteStore(SQLStore):
    """A SQLite file (WAL mode: `edgeq reports` can read while a collector writes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(path)
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
                self.db.executescript(SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT",
                                                    blob="BLOB"))
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> int:
        with self.db:
            before = self.db.total_changes
            self.db.executemany(query, rows)
            return self.db.total_changes - before


class PostgresStore(SQLStore):
    """A PostgreSQL database (psycopg 3): one store for many collectors and hosts."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        import psycopg

        self.where = _redacted(url)
        try:
            self.db = psycopg.connect(url, connect_timeout=10)
            with self.db.transaction():
                # Two collectors creating the schema at once: the advisory lock serialises it.
                self.db.execute("SELECT pg_advisory_xact_lock(7150001)")
                for statement in SCHEMA.format(serial="BIGSERIAL PRIMARY KEY",
                                               blob="BYTEA").split(";"):
                    if statement.strip():
                        self.db.execute(statement)
        except psycopg.Error as e:
            raise InputError(f"{self.where}: cannot open as a PostgreSQL result store "
                             f"({str(e).strip().splitlines()[0]})") from e

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> int:
        with self.db.transaction(), self.db.cursor() as cur:
            cur.executemany(self._sql(query), rows)
            return max(cur.rowcount, 0)

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.transaction():  # a read never leaves a transaction open
            return super()._rows(query, params)


def _redacted(url: str) -> str:
    """`url` without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0]}:***@{host}"


def is_postgres(where: str | Path) -> bool:
    """Whether `where` names a PostgreSQL database rather than a SQLite file."""
    return str(where).startswith(("postgresql://", "postgres://"))


def open_store(where: str | Path, must_exist: bool = False) -> SQLStore:
    """The store at `where`: a postgresql:// URL or a SQLite file."""
    if is_postgres(where):
        return PostgresStore(str(where))
    if must_exist and not Path(where).is_file():
        raise InputError(f"result store not found: {where} (run `edgeq collect --db {where}` first)")
    return SQLiteStore(Path(where))
