"""The device's model store (atomic active/previous switch) and its result spool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_agent.spool import Spool
from device_agent.store import ModelStore


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


def test_spool_keeps_order_survives_reopen_and_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=3)
    for k in range(5):
        spool.put({"report_id": f"r{k}", "n": k})
    assert [m["n"] for m in spool.pending()] == [2, 3, 4] and spool.dropped == 2
    spool.ack("r3")
    (tmp_path / "broken.json").write_text("{half")
    reopened = Spool(tmp_path, limit=3)
    assert [m["report_id"] for m in reopened.pending()] == ["r2", "r4"]
    assert not (tmp_path / "broken.json").exists()
