"""Hostile and broken input against the real agent and collector (real mosquitto, real
processes): every case of the adversarial run. After each, the target is still up, nothing is
lost, and replays are refused. The README's "cases tried / survived" table lists them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import bundled, run_cli
from fleet_helpers import QUICK, active_sha, deploy_to, host, ping, raw_deploy, signed_bundle, wait_online
from mqtt_env import CollectorProcess, Mosquitto, free_port, stored_rows, wait_until

from device_agent.protocol import encode, resend_topic, topic
from device_agent.signing import authorize, generate_keys
from edgeq.errors import DeviceRefused, DeviceUnreachable
from edgeq.fleet.deploy import signed_manifest
from edgeq.fleet.remote import request_report
from edgeq.fleet.session import HostSession, new_command_id

VALID_RESULT = {"schema_version": 1, "cmd_id": "b1", "type": "benchmark", "ts": 1.0,
                "agent": {}, "arch": "x86_64", "runtime": {"name": "litert"},
                "model": {"sha256": "f" * 64}, "latency": {"p50_ms": 1.0, "p90_ms": 1.5,
                                                           "p99_ms": 2.0},
                "power": None, "accuracy": None, "errors": []}


def publish(broker: Mosquitto, name: str, payload: bytes) -> None:
    with HostSession(host(broker)) as s:
        s.client.publish(name, payload, qos=1).wait_for_publish(10)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# -- the collector ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    """A broker and a collector (real process) with metrics, shared by the collector cases."""
    root = tmp_path_factory.mktemp("hostile")
    broker = Mosquitto(root / "broker").start()
    port = free_port()
    collector = CollectorProcess(broker.url, root / "r.sqlite", ("--metrics-port", str(port)))
    collector.start()
    wait_until(lambda: _metrics_up(port), 30, "collector metrics")
    yield broker, collector, port
    collector.stop()
    broker.stop()


def _metrics_up(port: int) -> bool:
    try:
        metric(port, "edgeq_collector_results_received_total")
        return True
    except OSError:
        return False


def _valid(report_id: str, device: str = "dev9") -> bytes:
    return encode({**VALID_RESULT, "report_id": report_id, "device": device})


# columns: case, raw payload on edgeq/v1/dev9/result
POISON = [
    ("deep nesting", b"[" * 30000 + b"]" * 30000),
    ("400-digit ts", _valid("poisonts01")[:-1] + b',"x":' + b"1" * 400 + b"}"),
    ("task as a list", encode({**json.loads(_valid("poison0002")),
                               "accuracy": {"task": [1, 2]}})),
    ("p50_ms as an object", encode({**json.loads(_valid("poison0003")),
                                    "latency": {"p50_ms": {"a": 1}}})),
    ("NaN and Infinity", _valid("poison0004").replace(b'"ts":1.0', b'"ts":NaN')),
    ("string in a REAL column", encode({**json.loads(_valid("poison0005")),
                                        "latency": {"p50_ms": "fast"}})),
    ("1.5 MB result", encode({**json.loads(_valid("poison0006")), "errors": ["x" * 4000] * 400})),
    ("another device's result", _valid("poison0007", device="dev8")),
    ("not JSON", b"\xff\xfe\x00garbage"),
]


@pytest.mark.parametrize("case,payload", POISON, ids=[c for c, _ in POISON])
def test_a_poison_result_is_quarantined_and_collection_goes_on(fleet, case: str,
                                                              payload: bytes) -> None:
    broker, collector, port = fleet
    invalid = metric(port, "edgeq_collector_results_invalid_total")
    publish(broker, topic("dev9", "result"), payload)
    good = f"good{abs(hash(case)) % 10**8:08d}"
    publish(broker, topic("dev9", "result"), _valid(good))
    wait_until(lambda: good in {r for r, _ in stored_rows(collector.db)}, 20, "the next result")
    assert metric(port, "edgeq_collector_results_invalid_total") == invalid + 1
    assert collector.proc.poll() is None
    with sqlite3.connect(collector.db) as db:
        reason = db.execute("SELECT reason FROM quarantine ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert reason


def test_a_restarted_collector_is_not_fed_the_poison_again(fleet) -> None:
    broker, collector, port = fleet
    with sqlite3.connect(collector.db) as db:
        before = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    collector.stop()
    collector.start()
    wait_until(lambda: _metrics_up(port), 30, "collector back")
    publish(broker, topic("dev9", "result"), _valid("afterrestart1"))
    wait_until(lambda: "afterrestart1" in {r for r, _ in stored_rows(collector.db)}, 20, "stored")
    assert metric(port, "edgeq_collector_results_invalid_total") == 0  # nothing redelivered
    with sqlite3.connect(collector.db) as db:
        assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == before


def test_reports_tolerate_missing_optional_fields(fleet, capsys) -> None:
    _, collector, _ = fleet
    odd = {**VALID_RESULT, "report_id": "nop90field1", "device": "dev9", "ts": 2.0,
           "latency": {"p50_ms": 1.0}, "runtime": {}}
    with sqlite3.connect(collector.db) as db:  # as an older collector may have stored it
        db.execute("INSERT INTO reports (report_id, device, type, payload) VALUES (?, ?, ?, ?)",
                   ("nop90field1", "dev9", "benchmark", json.dumps(odd)))
    code, out, err = run_cli(["reports", "--db", str(collector.db)], capsys)
    assert code == 0 and "dev9" in out, err


def test_idle_metrics_connections_are_closed(fleet) -> None:
    _, _, port = fleet
    with socket.create_connection(("127.0.0.1", port), timeout=15) as idle:
        start = time.monotonic()
        assert idle.recv(1) == b""  # the server hung up on the idle client
    assert time.monotonic() - start < 10


# -- the agent: messages nobody signed -----------------------------------------------------

@pytest.fixture()
def agent(broker, agents):
    a = agents("dev1")
    wait_online(broker, "dev1")
    return a


# columns: case, topic leaf under edgeq/v1/dev1/, payload
AGENT_POISON = [
    ("chunk index ²", "deploy/x/²", b"x"),
    ("5000-digit chunk index", "deploy/x/" + "9" * 5000, b"x"),
    ("deep nesting on cmd", "cmd", b"[" * 30000 + b"]" * 30000),
    ("deep nesting on ack", "ack", b"[" * 30000 + b"]" * 30000),
    ("min_seconds 1e400", "cmd", b'{"id":"big1","type":"benchmark","min_seconds":1' + b"0" * 400 + b"}"),
    ("NaN seconds", "cmd", b'{"id":"nan1","type":"benchmark","min_seconds":NaN,"max_seconds":NaN}'),
    ("unsigned rollback", "cmd", encode({"id": "rb1", "type": "rollback"})),
    ("ack of a foreign shape", "ack", encode({"report_ids": [{"$gt": ""}]})),
]


@pytest.mark.parametrize("case,leaf,payload", AGENT_POISON, ids=[c for c, _, _ in AGENT_POISON])
def test_a_poison_message_leaves_the_agent_running(broker, agent, case: str, leaf: str,
                                                   payload: bytes) -> None:
    publish(broker, f"edgeq/v1/dev1/{leaf}", payload)
    assert ping(broker, "dev1")["state"] == "pong"
    assert agent.proc.poll() is None and "Traceback" not in agent.log()


def test_a_forged_resend_flood_does_not_amplify(broker, agents, cnn_int8, signing_keys) -> None:
    a = agents("dev2", "--resend-after", "600")
    wait_online(broker, "dev2")
    deploy_to(broker, "dev2", cnn_int8, signing_keys[0])
    request_report(host(broker), "dev2", "benchmark", 60, **QUICK)  # one unacknowledged result
    with HostSession(host(broker)) as s:
        s.subscribe(topic("dev2", "result"))
        time.sleep(0.5)
        s.unread.clear()
        for _ in range(200):
            s.client.publish(resend_topic(), b"{}", qos=0)
        time.sleep(3)
        sent = [m for _, m in s.unread] + _drain(s, 1.0)
    assert len(sent) <= 1 and a.proc.poll() is None


def _drain(session: HostSession, seconds: float) -> list[dict[str, Any]]:
    got = []
    try:
        while True:
            got.append(session.wait_for(lambda n, m: True, seconds, "more")[1])
    except DeviceUnreachable:
        return got


# -- the agent: NaN in the user's data ------------------------------------------------------

def test_a_nan_label_never_bricks_the_agent(tmp_path: Path, broker, agents, collectors, cnn_int8,
                                            signing_keys) -> None:
    with np.load(bundled("digits_cnn")[2]) as d:
        x, y = d["x"], d["y"].astype(np.float64)
    y[0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x[:20], y=y[:20])
    a = agents("dev3")
    wait_online(broker, "dev3")
    deploy_to(broker, "dev3", cnn_int8, signing_keys[0], eval=tmp_path / "nan.npz")
    result = request_report(host(broker), "dev3", "benchmark", 60, **QUICK)
    assert any("non-finite" in e for e in result["errors"])
    collector = collectors()
    wait_until(lambda: result["report_id"] in {r for r, _ in stored_rows(collector.db)}, 30,
               "the result stored")
    a.stop()
    a.start()
    wait_online(broker, "dev3")
    assert ping(broker, "dev3")["state"] == "pong" and "Traceback" not in a.log()


# -- deploys: replay, downgrade, device binding ---------------------------------------------

def test_a_replayed_deploy_is_refused_before_and_after_a_restart(tmp_path: Path, broker, agents,
                                                                 cnn_int8, gelu_int8,
                                                                 signing_keys) -> None:
    a = agents("dev4")
    wait_online(broker, "dev4")
    old_data, old_manifest = signed_bundle(tmp_path, cnn_int8, signing_keys[0], device="dev4")
    raw_deploy(broker, "dev4", old_data, old_manifest, cmd_id="deploy-orig")
    newer = deploy_to(broker, "dev4", gelu_int8, signing_keys[0])["model"]["sha256"]
    with pytest.raises(DeviceRefused, match="not newer"):  # captured and sent again
        raw_deploy(broker, "dev4", old_data, old_manifest)
    a.stop()
    a.start()
    wait_online(broker, "dev4")
    with pytest.raises(DeviceRefused, match="not newer"):
        raw_deploy(broker, "dev4", old_data, old_manifest)
    with HostSession(host(broker)) as s:  # the original command id: taken, ignored
        s.client.publish(topic("dev4", "cmd"), encode({"id": "deploy-orig", "type": "deploy",
                                                       "manifest": old_manifest}), qos=1)
    assert active_sha(broker, "dev4") == newer
    assert "command deploy-orig: already taken" in a.log()


# columns: case, how the manifest is spoiled, words of the refusal
FORGED = [
    ("for another device", {"device": "dev-other"}, "signed for device 'dev-other'"),
    ("expired", {"lifetime_s": -10}, "expired"),
    ("other key", {"key": "other"}, "signed by key"),
    ("tampered size", {"tamper": ("size", 1)}, "signature does not match"),
]


@pytest.mark.parametrize("case,how,words", FORGED, ids=[c for c, _, _ in FORGED])
def test_forged_or_misdirected_deploys_are_refused(tmp_path: Path, broker, agent, cnn_int8,
                                                   signing_keys, case: str, how: dict,
                                                   words: str) -> None:
    key = generate_keys(tmp_path / "other")[0] if how.get("key") else signing_keys[0]
    data, manifest = signed_bundle(tmp_path, cnn_int8, key, device=how.get("device", "dev1"),
                                   lifetime_s=how.get("lifetime_s", 300))
    if "tamper" in how:
        field, delta = how["tamper"]
        manifest[field] += delta
        manifest["chunks"] = -(-manifest["size"] // manifest["chunk_size"])
    with pytest.raises(DeviceRefused, match=words):
        raw_deploy(broker, "dev1", data, manifest)
    assert ping(broker, "dev1")["status"]["model"] is None


def test_forged_rollbacks_are_refused(broker, agent, cnn_int8, gelu_int8, signing_keys,
                                      tmp_path: Path) -> None:
    deploy_to(broker, "dev1", cnn_int8, signing_keys[0])
    active = deploy_to(broker, "dev1", gelu_int8, signing_keys[0])["model"]["sha256"]
    other = generate_keys(tmp_path / "other")[0]
    previous = ping(broker, "dev1")["status"]["previous"]["bundle"]
    for key, device, to, words in ((other, "dev1", previous, "signed by key"),
                                   (signing_keys[0], "dev2", previous, "signed for device"),
                                   (signing_keys[0], "dev1", "0" * 64, "names model")):
        auth = authorize(key, "rollback", device, 60, to=to)
        cmd_id = new_command_id("rollback")
        with HostSession(host(broker)) as s:
            s.subscribe(topic("dev1", "event"))
            s.client.publish(topic("dev1", "cmd"), encode({"id": cmd_id, "type": "rollback",
                                                           "authorization": auth}), qos=1)
            with pytest.raises(DeviceRefused, match=words):
                s.answer("dev1", cmd_id, ("activated",), 15, "rollback")
    assert active_sha(broker, "dev1") == active


def test_a_trickling_transfer_cannot_hold_the_device(tmp_path: Path, broker, agent, cnn_int8,
                                                     gelu_int8, signing_keys) -> None:
    data, manifest = signed_bundle(tmp_path, cnn_int8, signing_keys[0], chunk_size=2048)
    cmd_id = new_command_id("deploy")
    with HostSession(host(broker)) as s:  # a transfer that sends one chunk and stops
        s.subscribe(topic("dev1", "event"))
        s.client.publish(topic("dev1", "cmd"), encode({"id": cmd_id, "type": "deploy",
                                                       "manifest": manifest}), qos=1)
        s.answer("dev1", cmd_id, ("ready",), 15, "ready")
        with pytest.raises(DeviceRefused, match="not newer"):  # replaying it is refused at once
            raw_deploy(broker, "dev1", data, manifest)
        newer = deploy_to(broker, "dev1", gelu_int8, signing_keys[0])  # pre-empts it
        with pytest.raises(DeviceRefused, match="pre-empted"):
            s.answer("dev1", cmd_id, ("activated",), 5, "the pre-empted deploy")
    assert active_sha(broker, "dev1") == newer["model"]["sha256"]


# -- signed but malformed bundles -------------------------------------------------------------

def _rezip(data: bytes, change) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    methods: dict[str, int] = {}
    change(members, methods)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, body in members.items():
            z.writestr(name, body, compress_type=methods.get(name, zipfile.ZIP_STORED))
    return out.getvalue()


def _meta(edit) -> Any:
    def change(members: dict, methods: dict) -> None:
        meta = json.loads(members["bundle.json"])
        edit(meta)
        members["bundle.json"] = json.dumps(meta).encode()
    return change


def _drop(*path: str):
    def edit(meta: dict) -> None:
        for key in path[:-1]:
            meta = meta[key]
        del meta[path[-1]]
    return edit


def _deep(members: dict, methods: dict) -> None:
    members["bundle.json"] = b'{"x":' + b"[" * 50000 + b"]" * 50000 + b"}"


def _method_99(data: bytes) -> bytes:
    raw = bytearray(data)  # rewrite the compression method of every header to 99
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (k := raw.find(sig, start)) >= 0:
            raw[k + offset: k + offset + 2] = (99).to_bytes(2, "little")
            start = k + 4
    return bytes(raw)


def _corrupt_deflate(members: dict, methods: dict) -> None:
    methods["model.tflite"] = zipfile.ZIP_DEFLATED


def _damaged_member(data: bytes, name: str) -> bytes:
    """Overwrite bytes in the middle of member `name`'s (deflated) data."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(name)
    raw = bytearray(data)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.compress_size // 2
    raw[middle: middle + 32] = bytes(range(32))
    return bytes(raw)


def _npz_bomb(members: dict, methods: dict) -> None:
    """eval.npz whose `y` inflates to 512 MiB from a few hundred KB (deflated zeros)."""
    size = 512 * 2**20
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (size // 4,)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        with zipfile.ZipFile(io.BytesIO(members["eval.npz"])) as old:
            for name in old.namelist():
                if name != "y.npy":
                    z.writestr(name, old.read(name))
        with z.open("y.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            block = bytes(64 * 2**20)
            for _ in range(size // len(block)):
                f.write(block)
    members["eval.npz"] = out.getvalue()


# columns: case, bundle change, words of the rejection
MALFORMED = [
    ("no model.bytes", _meta(_drop("model", "bytes")), "model.bytes"),
    ("no name", _meta(_drop("name")), "'name'"),
    ("io not an object", _meta(lambda m: m.update(io="x")), "'io' must be an object"),
    ("50,000-deep nesting", _deep, "nested deeper"),
    ("corrupt deflate stream", None, "not a readable edgeq bundle"),
    ("compression method 99", None, "compression method 99|not a readable"),
    ("nested npz bomb", _npz_bomb, "over 268,435,456 bytes|268,435,456"),
]


@pytest.mark.parametrize("case,change,words", MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_signed_but_malformed_bundles_are_rejected_and_never_activated(
        tmp_path: Path, broker, agent, cnn_int8, signing_keys, case: str, change,
        words: str) -> None:
    good = deploy_to(broker, "dev1", cnn_int8, signing_keys[0])["model"]["sha256"]
    data, _ = signed_bundle(tmp_path, cnn_int8, signing_keys[0], bundled("digits_cnn")[2])
    if case == "corrupt deflate stream":
        data = _damaged_member(_rezip(data, _corrupt_deflate), "model.tflite")
    elif case == "compression method 99":
        data = _method_99(data)
    else:
        data = _rezip(data, change)
    meta = {"name": "evil", "model": {"sha256": "0" * 64}}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        with contextlib.suppress(Exception):
            meta["model"]["sha256"] = json.loads(z.read("bundle.json"))["model"]["sha256"]
    manifest = signed_manifest(signing_keys[0], "dev1", data, meta, 64 * 1024, 300)
    with pytest.raises(DeviceRefused, match=words):
        raw_deploy(broker, "dev1", data, manifest)
    assert active_sha(broker, "dev1") == good
    agent.stop()
    agent.start()
    wait_online(broker, "dev1")
    assert active_sha(broker, "dev1") == good and "Traceback" not in agent.log()
    assert not any((agent.data_dir / "incoming").iterdir())


# -- a full disk --------------------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_mid_deploy_is_a_clean_rejection(tmp_path: Path, broker, agents, cnn_int8,
                                                     signing_keys) -> None:
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        a = agents("dev5", data_dir=disk / "agent")
        wait_online(broker, "dev5")
        good = deploy_to(broker, "dev5", cnn_int8, signing_keys[0])["model"]["sha256"]
        data, manifest = signed_bundle(tmp_path, cnn_int8, signing_keys[0], chunk_size=4096,
                                       device="dev5")
        cmd_id = new_command_id("deploy")
        with HostSession(host(broker)) as s:
            s.subscribe(topic("dev5", "event"))
            s.client.publish(topic("dev5", "cmd"), encode({"id": cmd_id, "type": "deploy",
                                                           "manifest": manifest}), qos=1)
            s.answer("dev5", cmd_id, ("ready",), 15, "ready")
            subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=64k"],
                           capture_output=True)  # until the disk is full
            for n in range(manifest["chunks"]):
                s.client.publish(f"edgeq/v1/dev5/deploy/{cmd_id}/{n}",
                                 data[n * 4096:(n + 1) * 4096], qos=1)
            with pytest.raises(DeviceRefused, match=r"No space left|cannot"):
                s.answer("dev5", cmd_id, ("activated",), 30, "verdict")
        (disk / "filler").unlink()
        assert active_sha(broker, "dev5") == good and a.proc.poll() is None
        assert not any((disk / "agent" / "incoming").iterdir())
        a.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# -- stale commands and stopping --------------------------------------------------------------

def test_a_command_that_expired_while_the_agent_was_busy_is_dropped(broker, deployed_dev1,
                                                                    cnn_int8, signing_keys,
                                                                    tmp_path: Path) -> None:
    _data, manifest = signed_bundle(tmp_path, cnn_int8, signing_keys[0])
    with HostSession(host(broker)) as s:
        s.subscribe(topic("dev1", "event"))
        s.client.publish(topic("dev1", "cmd"), encode(
            {"id": "longbench", "type": "benchmark", "runs": 1_000_000, "min_seconds": 4,
             "max_seconds": 4, "power": False, "evaluate": False}), qos=1)
        s.answer("dev1", "longbench", ("started",), 15, "started")
        s.client.publish(topic("dev1", "cmd"), encode(
            {"id": "latedeploy", "type": "deploy", "manifest": manifest,
             "expires": time.time() + 1}), qos=1)
        with pytest.raises(DeviceRefused, match="expired"):
            s.answer("dev1", "latedeploy", ("ready",), 20, "the late deploy")


@pytest.fixture()
def deployed_dev1(broker, agent, cnn_int8, signing_keys):
    deploy_to(broker, "dev1", cnn_int8, signing_keys[0])
    return agent


def test_sigterm_ends_a_long_benchmark_within_a_second(broker, deployed_dev1) -> None:
    with HostSession(host(broker)) as s:
        s.subscribe(topic("dev1", "event"))
        s.client.publish(topic("dev1", "cmd"), encode(
            {"id": "thirty", "type": "benchmark", "runs": 1_000_000, "min_seconds": 30,
             "max_seconds": 30, "power": False}), qos=1)
        s.answer("dev1", "thirty", ("started",), 15, "started")
    time.sleep(0.5)
    start = time.monotonic()
    deployed_dev1.proc.send_signal(15)
    deployed_dev1.proc.wait(10)
    assert time.monotonic() - start < 2.0
    assert "interrupted: the agent is stopping" in (deployed_dev1.data_dir / "spool").joinpath(
        next(p.name for p in (deployed_dev1.data_dir / "spool").glob("*.json"))).read_text()


# -- the host's command line -------------------------------------------------------------------

# columns: argv after `edgeq`, words of the one-line error
CLI_CASES = [
    (["bench", "--device", "d", "--broker", "mqtt://127.0.0.1:1", "--runs", "1000000000"],
     "1000000000 is not in the range"),
    (["bench", "--device", "d", "--broker", "mqtt://127.0.0.1:1", "--max-seconds", "nan"],
     "not a finite number"),
    (["devices", "--broker", "mqtt://admin:hunter2@127.0.0.1:1"], "carries a password"),
]


@pytest.mark.parametrize("argv,words", CLI_CASES, ids=["runs 1e9", "max-seconds nan", "password"])
def test_bad_host_arguments_are_one_line_exit_2(capsys, argv: list[str], words: str) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and words in err and "Traceback" not in err
    assert "hunter2" not in err + out


def test_keys_generate_over_a_dangling_symlink(tmp_path: Path, capsys) -> None:
    (tmp_path / "host.key").symlink_to(tmp_path / "nowhere")
    code, _, err = run_cli(["keys", "generate", "-o", str(tmp_path)], capsys)
    assert code == 2 and "link" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()


def test_the_password_file_is_used_and_never_logged(tmp_path: Path, capsys) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    code, _, err = run_cli(["devices", "--broker", "mqtt://127.0.0.1:1", "--username", "u",
                            "--password-file", str(pw)], capsys)
    assert code == 3 and "s3cret" not in err

