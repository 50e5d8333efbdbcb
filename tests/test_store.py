"""Both result stores behind one interface: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgeq.errors import InputError
from edgeq.fleet.store import SQLStore, open_store

pytestmark = pytest.mark.integration


def result(report_id: str, device: str = "pi-1", ts: float = 1.0, p95: float = 2.0) -> dict:
    return {"schema_version": 1, "report_id": report_id, "cmd_id": "b1", "type": "benchmark",
            "device": device, "ts": ts, "agent": {}, "arch": "aarch64",
            "runtime": {"name": "litert", "version": "2.3"}, "model": {"sha256": "f" * 64},
            "latency": {"p50_ms": 1.0, "p95_ms": p95, "p99_ms": 3.0}, "power": None,
            "accuracy": None, "errors": []}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "r.sqlite")
    return request.getfixturevalue("postgres_url")


def test_results_are_stored_once_each_and_read_back_in_order(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.add([result("b" * 16, ts=2.0), result("a" * 16, ts=1.0)]) == 2
        assert store.add([result("a" * 16), result("c" * 16, device="pi-2", ts=3.0)]) == 1
        assert [r["report_id"][0] for r in store.results()] == ["a", "b", "c"]
        assert [r["report_id"][0] for r in store.results("pi-2")] == ["c"]
        assert store.count() == 3
    finally:
        store.close()
    reopened = open_store(store_url, must_exist=True)  # the schema is created only once
    try:
        assert reopened.count() == 3
    finally:
        reopened.close()


def test_quarantine_keeps_refused_payloads_bounded(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.quarantine([("edgeq/v1/x/result", "not JSON", b"\xff" * 100_000)])
        [kept] = store.quarantined()
        assert kept["reason"] == "not JSON" and kept["bytes"] == 100_000
    finally:
        store.close()


def test_rollout_state_and_pins_live_in_the_same_store(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.save_rollout("ro-1", "running", {"model": "m", "group": "g"})
        store.save_devices("ro-1", [{"device": "pi-1", "wave": 0, "state": "queued"},
                                    {"device": "pi-2", "wave": 1, "state": "queued"}])
        store.save_devices("ro-1", [{"device": "pi-1", "wave": 0, "state": "activated",
                                     "cmd_id": "deploy-1", "previous": "e" * 64}])
        store.save_rollout("ro-1", "done", {"model": "m", "group": "g"})
        assert store.rollout("ro-1")["state"] == "done"
        assert store.rollout("nope") is None
        rows = store.rollout_devices("ro-1")
        assert [(r["device"], r["state"]) for r in rows] == [("pi-1", "activated"), ("pi-2", "queued")]
        assert rows[0]["previous"] == "e" * 64
        store.pin("group", "lab", "d" * 64, "validation")
        store.pin("group", "lab", "c" * 64, "moved")
        assert [(p["name"], p["model_sha256"][0]) for p in store.pins()] == [("lab", "c")]
        assert store.unpin("group", "lab") and not store.unpin("group", "lab")
    finally:
        store.close()


def test_two_writers_on_one_store_store_each_result_once(store_url: str) -> None:
    stores: list[SQLStore] = [open_store(store_url), open_store(store_url)]
    ids = [f"{k:016d}" for k in range(400)]
    new = [0, 0]

    def write(k: int) -> None:  # both offer every result, in batches, in opposite orders
        order = ids if k == 0 else ids[::-1]
        for start in range(0, len(order), 50):
            new[k] += stores[k].add([result(i) for i in order[start:start + 50]])
    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sum(new) == 400 and stores[0].count() == 400
    finally:
        for s in stores:
            s.close()


def test_an_unreachable_postgres_is_one_line_without_the_password() -> None:
    with pytest.raises(InputError) as e:
        open_store("postgresql://edgeq:s3cret@127.0.0.1:1/db?connect_timeout=2")
    assert "s3cret" not in str(e.value) and "PostgreSQL" in str(e.value)
