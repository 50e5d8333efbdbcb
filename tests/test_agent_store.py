"""The device's model store (atomic active/previous switch) and its result spool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from device_agent.spool import Spool
from device_agent.store import CRASH_POINTS, ModelStore


def fake_bundle(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "bundle.json").write_text(json.dumps({"name": name, "model": {"sha256": name * 8}}))
    return d


def test_activate_keeps_previous_and_prunes_the_rest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "data")
    assert store.active() is None
    for name in ("a", "b", "c"):
        store.activate(store.install(fake_bundle(store.incoming, name), name))
    assert store.active().name == "c" and store.previous().name == "b"
    assert sorted(p.name for p in store.models.iterdir()) == ["b", "c"]
    assert store.rollback().name == "b"
    assert store.active().name == "b" and store.previous().name == "c"
    assert (tmp_path / "data" / "active").is_symlink()  # switched by renaming a link


def test_rollback_without_a_previous_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.activate(store.install(fake_bundle(store.incoming, "a"), "a"))
    with pytest.raises(LookupError, match="no previous model"):
        store.rollback()


def test_leftover_transfers_are_cleared_on_start(tmp_path: Path) -> None:
    ModelStore(tmp_path)
    (tmp_path / "incoming" / "d1.part").write_bytes(b"half")
    fake_bundle(tmp_path / "incoming", "d1.staging")
    ModelStore(tmp_path)
    assert not any((tmp_path / "incoming").iterdir())


def result(report_id: str, n: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid result message (protocol.check_result accepts it)."""
    return {"schema_version": 1, "report_id": report_id, "cmd_id": "b1", "type": "benchmark",
            "device": "pi-1", "ts": 1.0 + n, "agent": {}, "arch": "x86_64", "runtime": {},
            "model": {"sha256": "f" * 64}, "latency": {"runs": n}, "power": None,
            "accuracy": None, "errors": [], **changes}


def test_spool_keeps_order_survives_reopen_and_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=3)
    for k in range(5):
        spool.put(result(f"report{k:04d}", k))
    assert [m["latency"]["runs"] for m in spool.pending()] == [2, 3, 4] and spool.dropped == 2
    spool.ack("report0003")
    reopened = Spool(tmp_path, limit=3)
    assert [m["report_id"] for m in reopened.pending()] == ["report0002", "report0004"]


# columns: what an older agent (or a bad disk) left in the spool
@pytest.mark.parametrize("content", ['{"half', '{"report_id": "reportnan1", "ts": NaN}',
                                     json.dumps(result("reportbad1", latency={"p50_ms": "x"}))])
def test_spool_never_holds_what_it_cannot_send(tmp_path: Path, content: str) -> None:
    spool = Spool(tmp_path)
    spool.put(result("reportgood"))
    (tmp_path / "stale.json").write_text(content)
    assert [m["report_id"] for m in spool.pending()] == ["reportgood"]
    assert spool.rejected == 1 and (tmp_path / "rejected" / "stale.json").exists()
    assert (tmp_path / "rejected" / "stale.why").read_text().strip()
    assert [m["report_id"] for m in Spool(tmp_path).pending()] == ["reportgood"]  # not retried
    with pytest.raises(ValueError):
        spool.put(result("reportnan2", ts=float("nan")))
    assert not (tmp_path / "reportnan2.json").exists()


def test_redeploying_the_active_bundle_never_deletes_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.activate(store.install(fake_bundle(store.incoming, "a"), "a"))
    store.activate(store.install(fake_bundle(store.incoming, "a"), "a"))  # same sha again
    assert store.active().name == "a" and (store.models / "a" / "bundle.json").exists()


CRASH_SCRIPT = """
import json, sys
from pathlib import Path
from device_agent.store import ModelStore
root, name, op = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = ModelStore(root)
if op == "rollback":
    store.rollback()
else:
    staged = store.incoming / name
    staged.mkdir()
    (staged / "bundle.json").write_text(json.dumps({"name": name, "model": {"sha256": name * 8}}))
    store.activate(store.install(staged, name))
"""


def _run_store(root: Path, name: str, op: str = "deploy", crash_at: str = "") -> int:
    env = {**os.environ, "EDGEQ_CRASH_AT": crash_at, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root), name, op], env=env,
                          capture_output=True, timeout=60).returncode


# columns: operation, crash point (a rollback installs nothing)
@pytest.mark.parametrize("op,point", [("deploy", p) for p in CRASH_POINTS]
                         + [("rollback", p) for p in CRASH_POINTS if p != "install"])
def test_a_crash_at_any_point_leaves_a_working_model_and_rollback(tmp_path: Path, point: str,
                                                                 op: str) -> None:
    """Kill the process (SIGKILL) at each rename/unlink of a deploy or a rollback; after a
    restart: an active model that reads back, another to roll back to, and no residue."""
    for name in ("a", "b"):
        assert _run_store(tmp_path, name) == 0
    code = _run_store(tmp_path, "c", op, crash_at=point)
    assert code == -signal.SIGKILL, f"no crash at {point}"
    store = ModelStore(tmp_path)  # what the restarted agent does first
    active, previous = store.active(), store.previous()
    assert active is not None and previous is not None and active.name != previous.name
    assert {active.name, previous.name} <= {"a", "b", "c"}
    assert store.rollback().name == previous.name  # rollback possible
    assert not any(store.incoming.iterdir()) and not list(tmp_path.glob(".*.tmp-*"))
    assert sorted(p.name for p in store.models.iterdir()) == sorted({active.name, previous.name})
