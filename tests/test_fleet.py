"""The host side of the fleet on a real mosquitto: collectors (exactly once, shared load, acks,
metrics), the per-device ACL, and the CLI commands as a user runs them."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import REPO, bundled, run_cli
from mqtt_env import Mosquitto, free_port, stored_rows, wait_until

from device_agent.connection import Broker, make_client
from device_agent.protocol import encode, topic
from edgeq.errors import DeviceUnreachable
from edgeq.fleet.session import HostSession


def result(device: str = "dev1", report_id: str | None = None) -> dict:
    return {"schema_version": 1, "report_id": report_id or uuid.uuid4().hex, "cmd_id": "c1",
            "type": "benchmark", "device": device, "ts": 1.0, "agent": {"version": "t"},
            "arch": "x86_64", "runtime": {"name": "litert", "version": "t"},
            "model": {"name": "m", "sha256": "ab" * 32},
            "latency": {"p50_ms": 1.0, "p90_ms": 1.5, "p99_ms": 2.0}, "power": None,
            "accuracy": None, "errors": []}


class Publisher:
    """A raw MQTT 5 client publishing as a device would (or should not)."""

    def __init__(self, url: str, username: str | None = None,
                 password_file: Path | None = None) -> None:
        broker = Broker.from_url(url, username, password_file)
        self.reasons: dict[int, object] = {}
        self.client = make_client(broker, f"pub-{uuid.uuid4().hex[:8]}")
        self.client.on_publish = lambda c, u, mid, rc, p: self.reasons.__setitem__(mid, rc)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, name: str, payload: bytes) -> str:
        """Publish with QoS 1; returns the broker's PUBACK reason ('Success', 'Not authorized')."""
        info = self.client.publish(name, payload, qos=1)
        info.wait_for_publish(10)
        wait_until(lambda: info.mid in self.reasons, 5, "PUBACK reason")
        return str(self.reasons[info.mid])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_collector_stores_once_drops_invalid_acks_and_serves_metrics(tmp_path: Path, broker,
                                                                     collectors) -> None:
    db, port = tmp_path / "r.sqlite", free_port()
    collector = collectors("--metrics-port", str(port), db=db)
    wait_until(lambda: "subscribed" in collector.log(), 20, "collector subscribed")
    same = result(report_id="dup" + "0" * 29)
    with HostSession(Broker.from_url(broker.url)) as watcher:
        watcher.subscribe(topic("dev1", "ack"))
        pub = Publisher(broker.url)
        for payload in (same, same, {**same, "report_id": "x"}, result("dev2")):
            pub.publish(topic("dev1", "result"), encode(payload))  # last: dev2's on dev1's topic
        pub.publish(topic("dev1", "result"), b"not json")
        pub.close()
        _, ack = watcher.wait_for(lambda n, m: True, 10, "ack")
    assert ack["report_ids"] == [same["report_id"]]
    rows = wait_until(lambda: stored_rows(db), 10, "one row")
    metrics = wait_until(lambda: (t := _get(f"http://127.0.0.1:{port}/metrics"))
                         and "received_total 5" in t and t, 10, "metrics")
    assert rows == [(same["report_id"], "dev1")]
    assert "edgeq_collector_results_stored_total 1" in metrics
    assert "edgeq_collector_results_duplicates_total 1" in metrics
    assert "edgeq_collector_results_invalid_total 3" in metrics
    assert collector.stop() == 0


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def test_two_collectors_share_the_load_and_store_everything_once(tmp_path: Path, broker,
                                                                  collectors) -> None:
    db = tmp_path / "r.sqlite"
    group = [collectors("--client-id", f"c{k}", db=db, name=f"c{k}") for k in (1, 2)]
    for c in group:
        wait_until(lambda c=c: "subscribed" in c.log(), 20, "collector subscribed")
    pub = Publisher(broker.url)
    sent = [result(f"dev{k % 5}") for k in range(60)]
    for r in sent:
        pub.publish(topic(r["device"], "result"), encode(r))
    pub.close()
    wait_until(lambda: len(stored_rows(db)) == 60, 20, "60 rows")
    for c in group:
        assert c.stop() == 0
    received = [int(c.log().rsplit("stopped: ", 1)[1].split()[0]) for c in group]
    assert sum(received) == 60 and min(received) > 0  # both took a share
    assert sorted(r for r, _ in stored_rows(db)) == sorted(r["report_id"] for r in sent)


@pytest.mark.slow
def test_two_collectors_on_one_postgres_store_lose_nothing_when_one_is_killed(
        tmp_path: Path, broker, collectors, postgres_url: str) -> None:
    """One PostgreSQL store for both; c1 is killed mid-stream and comes back with its session:
    every result stored, none twice."""
    from edgeq.fleet.store import open_store

    group = [collectors("--client-id", f"c{k}", db=postgres_url, name=f"c{k}") for k in (1, 2)]
    for c in group:
        wait_until(lambda c=c: "subscribed" in c.log(), 20, "collector subscribed")
    sent = [result(f"dev{k % 20}") for k in range(3000)]
    pub = Publisher(broker.url)
    infos = []
    for k, r in enumerate(sent):
        infos.append(pub.client.publish(topic(r["device"], "result"), encode(r), qos=1))
        if k == 1000:
            group[0].kill()
    for info in infos:
        info.wait_for_publish(30)
    pub.close()
    group[0] = collectors("--client-id", "c1", db=postgres_url, name="c1-again")
    store = open_store(postgres_url)
    try:
        wait_until(lambda: store.count() == len(sent), 60, f"{len(sent)} rows")
        assert sorted(r["report_id"] for r in store.results()) == sorted(r["report_id"] for r in sent)
    finally:
        store.close()


@pytest.fixture()
def acl_broker(tmp_path: Path):
    """mosquitto with passwords and the shipped per-device ACL (docker/mosquitto/acl)."""
    passwords = tmp_path / "passwd"
    for k, (user, password) in enumerate((("edgeq-host", "hostpw"), ("dev1", "pw1"),
                                          ("dev2", "pw2"))):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if k == 0 else []), str(passwords),
                        user, password], check=True)
    for name, password in (("host", "hostpw"), ("dev1", "pw1"), ("bad", "wrong")):
        (tmp_path / f"{name}.pw").write_text(password)
    b = Mosquitto(tmp_path / "broker", extra_conf=(
        f"allow_anonymous false\npassword_file {passwords}\n"
        f"acl_file {REPO / 'docker' / 'mosquitto' / 'acl'}")).start()
    yield b
    b.stop()


def test_passwords_and_per_device_acl(tmp_path: Path, acl_broker, collectors, cnn_int8,
                                      signing_keys) -> None:
    from mqtt_env import AgentProcess

    host = Broker.from_url(acl_broker.url, "edgeq-host", tmp_path / "host.pw")
    agent = AgentProcess(acl_broker.url, "dev1", tmp_path / "dev1", signing_keys[1],
                         ("--username", "dev1", "--password-file", str(tmp_path / "dev1.pw"))).start()
    try:
        wait_until(lambda: "connected to" in agent.log(), 20, "dev1 connected")
        db = tmp_path / "r.sqlite"
        collector = collectors("--username", "edgeq-host", "--password-file",
                               str(tmp_path / "host.pw"), db=db, url=acl_broker.url)
        wait_until(lambda: "subscribed" in collector.log(), 20, "collector subscribed")
        from edgeq.fleet.deploy import DeployConfig, deploy
        from edgeq.fleet.remote import request_report

        deploy(DeployConfig(cnn_int8, "dev1", host, signing_keys[0], show_progress=False))
        report = request_report(host, "dev1", "benchmark", 60, runs=5, power=False)
        wait_until(lambda: stored_rows(db) == [(report["report_id"], "dev1")], 20, "stored")
        # dev1's credentials cannot speak for dev2: the broker refuses the PUBACK
        pub = Publisher(acl_broker.url, "dev1", tmp_path / "dev1.pw")
        assert pub.publish(topic("dev2", "result"), encode(result("dev2"))) == "Not authorized"
        assert pub.publish(topic("dev2", "status"), b"{}") == "Not authorized"
        assert pub.publish(topic("dev1", "result"), encode(result("dev1"))) == "Success"
        pub.close()
        wait_until(lambda: len(stored_rows(db)) == 2, 10, "dev1's own result stored")
        assert {d for _, d in stored_rows(db)} == {"dev1"}
    finally:
        agent.stop()
    with pytest.raises(DeviceUnreachable, match="refused the connection"):
        with HostSession(Broker.from_url(acl_broker.url, "dev2", tmp_path / "bad.pw")):
            pass


def test_tls_broker_with_a_private_ca(tmp_path: Path, cnn_int8, signing_keys) -> None:
    from mqtt_env import AgentProcess, make_tls_files

    from edgeq.fleet.deploy import DeployConfig, deploy

    ca, cert, key = make_tls_files(tmp_path / "tls")
    tls = Mosquitto(tmp_path / "tls-broker", extra_conf=(  # a TLS-only listener
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\ntls_version tlsv1.2")).start()
    url = f"mqtts://127.0.0.1:{tls.port}"
    agent = AgentProcess(url, "secure", tmp_path / "secure", signing_keys[1],
                         ("--tls-ca", str(ca))).start()
    try:
        host = Broker.from_url(url, tls_ca=ca)
        wait_until(lambda: "connected to mqtts://" in agent.log(), 20, "agent connected over TLS")
        verdict = deploy(DeployConfig(cnn_int8, "secure", host, signing_keys[0],
                                      show_progress=False))
        assert verdict["state"] == "activated"
        with pytest.raises(DeviceUnreachable, match="cannot reach broker"):  # CA not trusted
            with HostSession(Broker.from_url(url)):
                pass
    finally:
        agent.stop()
        tls.stop()


# -- the CLI as a user runs it -------------------------------------------------------------------

def test_cli_keys_deploy_bench_devices_reports(tmp_path: Path, broker, agents, collectors,
                                               cnn_int8, capsys) -> None:
    code, out, _ = run_cli(["keys", "generate", "-o", str(tmp_path / "k")], capsys)
    assert code == 0 and "host.pub" in out
    code, _, err = run_cli(["keys", "generate", "-o", str(tmp_path / "k")], capsys)
    assert code == 2 and "refusing to overwrite" in err
    agents("pi", trust_key=tmp_path / "k" / "host.pub")
    b = ["--broker", broker.url]
    wait_until(lambda: '"online"' in run_cli(["devices", *b, "--json"], capsys)[1], 20, "online")
    db = tmp_path / "r.sqlite"
    collector = collectors(db=db)
    wait_until(lambda: "subscribed" in collector.log(), 20, "collector subscribed")

    code, out, err = run_cli(["deploy", str(cnn_int8), "--device", "pi", *b, "--key",
                              str(tmp_path / "k" / "host.key"), "--eval",
                              str(bundled("digits_cnn")[2]), "--json"], capsys)
    assert code == 0, err
    verdict = json.loads(out)
    assert verdict["state"] == "activated" and verdict["bundle"]["eval_samples"] == 360

    code, out, err = run_cli(["bench", "--device", "pi", *b, "--runs", "20",
                              "--power-window", "0.2"], capsys)
    assert code == 0, err
    assert "p50" in out and "bit-exact with the host" in out and "report" in out
    code, out, _ = run_cli(["bench", "--device", "pi", *b, "--runs", "5", "--no-power",
                            "--no-eval", "--json"], capsys)
    bench = json.loads(out)
    assert code == 0 and bench["accuracy"] is None and bench["latency"]["runs"] == 5

    code, out, _ = run_cli(["devices", *b], capsys)
    assert code == 0 and "pi " in out and "online" in out and "digits_cnn" in out
    wait_until(lambda: len(stored_rows(db)) == 2, 20, "2 rows")
    collector.stop()
    code, out, _ = run_cli(["reports", "--db", str(db), "--json", "--plot",
                            str(tmp_path / "cmp.png")], capsys)
    rows = json.loads(out)["rows"]
    assert code == 0 and len(rows) == 1 and rows[0]["reports"] == 2
    assert rows[0]["exact_match"] == 1.0 and rows[0]["value"] == rows[0]["host_value"]
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli(["reports", "--db", str(db), "--csv"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("device,arch,runtime,model")


@pytest.mark.parametrize("args,code,message", [
    # (deploy arguments after the model, exit code, stderr text)
    (["--device", "ghost"], 3, "has never connected"),
    (["--device", "a/b"], 2, "device id 'a/b' is not valid"),
    (["--device", "pi", "--broker", "http://x"], 2, "scheme must be one of"),
])
def test_cli_deploy_errors_are_one_line_with_exit_codes(tmp_path: Path, broker, cnn_int8,
                                                        signing_keys, capsys, args: list[str],
                                                        code: int, message: str) -> None:
    base = [] if "--broker" in args else ["--broker", broker.url]
    got, _, err = run_cli(["deploy", str(cnn_int8), *args, *base, "--key",
                           str(signing_keys[0])], capsys)
    assert got == code and message in err and len(err.strip().splitlines()) == 1


def test_cli_deploy_of_a_missing_model_or_rejected_by_the_device(tmp_path: Path, broker, agents,
                                                                 cnn_int8, signing_keys, capsys) -> None:
    code, _, err = run_cli(["deploy", str(tmp_path / "nope.tflite"), "--device", "pi", "--broker",
                            broker.url, "--key", str(signing_keys[0])], capsys)
    assert code == 2 and "model not found" in err
    agents("small", "--max-bundle-mb", "0.001")
    wait_until(lambda: '"online"' in run_cli(["devices", "--broker", broker.url, "--json"],
                                              capsys)[1], 20, "online")
    code, _, err = run_cli(["deploy", str(cnn_int8), "--device", "small", "--broker", broker.url,
                            "--key", str(signing_keys[0])], capsys)
    assert code == 1 and "over this device's limit" in err


def test_cli_reports_without_a_store(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["reports", "--db", str(tmp_path / "none.sqlite")], capsys)
    assert code == 2 and "result store not found" in err
