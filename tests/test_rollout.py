"""Staged rollouts against the real mosquitto: a simulated fleet (real protocol, fake runtime),
real agents for the end-to-end path, both result stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, bundled, run_cli
from fleet_helpers import deploy_to, host, wait_online
from mqtt_env import wait_until
from sim_fleet import SimFleet

from device_agent.protocol import matches, parse_tags
from edgeq.errors import InputError
from edgeq.fleet.rollout import Gate, RolloutConfig, start_rollout, wave_sizes
from edgeq.fleet.store import open_store

# -- plans and gates (no broker) ----------------------------------------------------------------

@pytest.mark.unit
def test_waves_start_with_the_canary_and_grow_by_the_factor() -> None:
    assert wave_sizes(1000, "5%", 4) == [50, 200, 750]
    assert wave_sizes(10, "1", 2) == [1, 2, 4, 3]
    assert wave_sizes(3, "50%", 1) == [2, 1]  # factor 1 still grows by a device
    assert wave_sizes(1, "5%", 4) == [1] and wave_sizes(0, "5%", 4) == []
    for bad in ("0", "-3", "101%", "x", "2.5"):
        with pytest.raises(InputError, match="--canary"):
            wave_sizes(10, bad, 2)


@pytest.mark.unit
def test_gates_parse_or_say_what_is_expected() -> None:
    assert Gate.parse("p95-latency<=20%") == Gate("p95-latency", 20.0)
    assert Gate.parse("task>=0.9").text == "task>=0.9"
    for bad in ("p95<=20", "latency<=20%", "task>0.9", "agreement>=x"):
        with pytest.raises(InputError, match="p95-latency<=X%"):
            Gate.parse(bad)


@pytest.mark.unit
def test_groups_and_tags_select_devices() -> None:
    status = {"groups": ["lab", "eu"], "tags": {"site": "s1", "hw": "pi4"}}
    assert matches(status, "lab", {}) and matches(status, None, {"site": "s1"})
    assert not matches(status, "us", {}) and not matches(status, "lab", {"hw": "pi5"})
    assert not matches({}, "lab", {})  # an older agent's status has no groups
    assert parse_tags(["b=2", "a=1"]) == {"a": "1", "b": "2"}
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_tags(["novalue"])


# -- a simulated fleet --------------------------------------------------------------------------

@pytest.fixture()
def fleet_setup(tmp_path: Path, broker, signing_keys, cnn_int8):
    """start(count, **sim) -> a connected SimFleet; plus a config factory for rollouts of the
    real cnn_int8 bundle into its group."""
    from device_agent.signing import sha256_file

    started: list[SimFleet] = []
    new_sha = sha256_file(cnn_int8)

    def start(count: int, **kw) -> SimFleet:
        fleet = SimFleet(broker.host, broker.port, signing_keys[1], count, **kw).start()
        started.append(fleet)
        return fleet

    def config(db: str | None = None, **kw) -> RolloutConfig:
        return RolloutConfig(cnn_int8, host(broker), signing_keys[0],
                             db or str(tmp_path / "r.sqlite"), group="fleet",
                             show_progress=False, timeout_s=30, discover_s=0.5,
                             **{"canary": "10%", "waves": 3.0, "bench_runs": 5, **kw})
    yield start, config, new_sha
    for f in started:
        f.stop()


@pytest.mark.mqtt
def test_a_staged_rollout_reaches_every_device_exactly_once(fleet_setup, tmp_path: Path) -> None:
    start, config, new_sha = fleet_setup
    fleet = start(60)
    other = SimFleet(fleet.host, fleet.port, fleet.trusted_path, 3, group="other", prefix="x")
    other.start()
    try:
        report = start_rollout(config(gates=(Gate("p95-latency", 20.0),)))
    finally:
        other.stop()
    assert report.state == "done", report.reason
    assert [w["devices"] for w in report.waves] == [6, 18, 36]
    assert all(w["breach"] is None and w["p95-latency<=20%"] == pytest.approx(0, abs=1e-6)
               for w in report.waves)
    assert sorted(fleet.on_model(new_sha)) == sorted(fleet.devices)
    assert all(d.deploys == [new_sha] for d in fleet.devices.values())
    assert not other.on_model(new_sha)  # not in the group: untouched
    store = open_store(str(tmp_path / "r.sqlite"))
    try:
        assert {r["state"] for r in store.rollout_devices(report.rollout_id)} == {"verified"}
        assert store.rollout(report.rollout_id)["state"] == "done"
        assert store.count() == 2 * 60  # each device benchmarked before and after, stored
    finally:
        store.close()

    again = start_rollout(config())  # the same model again: nothing is sent
    assert again.state == "done" and all(d.deploys == [new_sha] for d in fleet.devices.values())
    assert {d.message for d in again.devices} == {"the device already runs this model"}


@pytest.mark.mqtt
def test_failing_canaries_halt_the_rollout_and_it_rolls_back(fleet_setup) -> None:
    start, config, new_sha = fleet_setup
    fleet = start(40)
    canaries = sorted(fleet.devices)[:4]  # 10% of 40
    fleet.devices[canaries[0]].fail_load = True  # 1 of 4 canaries: 25% > 5%
    report = start_rollout(config(max_failure_rate=0.05))
    assert report.state == "halted" and "failure rate 25.0% (1 of 4)" in report.reason
    assert len(report.waves) == 1  # halted before the next wave
    states = {d.device: d.state for d in report.devices}
    assert states[canaries[0]] == "failed"
    assert all(states[c] == "rolled-back" for c in canaries[1:])
    assert all(s == "queued" for d, s in states.items() if d not in canaries)
    assert not fleet.on_model(new_sha)  # every device back on (or still on) its previous model


@pytest.mark.mqtt
def test_a_slower_model_is_halted_by_the_latency_gate(fleet_setup, cnn_int8) -> None:
    start, config, new_sha = fleet_setup
    fleet = start(20, slow={})
    fleet.slow[new_sha] = 2.0
    report = start_rollout(config(gates=(Gate("p95-latency", 20.0),)))
    assert report.state == "halted" and "p95 latency +100.0%" in report.reason
    assert report.waves[0]["p95-latency<=20%"] == pytest.approx(100.0, rel=1e-3)
    assert not fleet.on_model(new_sha)
    assert sum(d.state == "rolled-back" for d in report.devices) == 2


@pytest.mark.mqtt
def test_pinned_and_offline_devices_are_skipped_or_pending_then_resumed(
        fleet_setup, tmp_path: Path, broker, signing_keys, capsys) -> None:
    start, config, new_sha = fleet_setup
    fleet = start(10)
    names = sorted(fleet.devices)
    db = str(tmp_path / "r.sqlite")
    code, out, err = run_cli(["rollout", "pin", "--device", names[3], "--model", "0" * 64,
                              "--reason", "field trial", "--db", db], capsys)
    assert code == 0, err
    fleet.disconnect(names[5])  # a crash: its last will says offline
    wait_until(lambda: _offline(broker, names[5]), 10, "the last will")
    report = start_rollout(config())
    states = {d.device: d for d in report.devices}
    assert states[names[3]].state == "skipped" and "field trial" in states[names[3]].message
    assert states[names[5]].state == "pending"
    assert report.state == "running" and "pending" in report.reason
    fleet.reconnect(names[5])
    wait_online(broker, names[5])
    code, out, err = run_cli(["rollout", "resume", report.rollout_id, "--broker", broker.url,
                              "--key", str(signing_keys[0]), "--db", db, "--json"], capsys)
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["state"] == "done" and resumed["counts"] == {"verified": 9, "skipped": 1}
    assert fleet.devices[names[5]].deploys == [new_sha] and not fleet.devices[names[3]].deploys
    code, out, _ = run_cli(["rollout", "status", report.rollout_id, "--db", db], capsys)
    assert code == 0 and "done" in out and names[3] in out and "field trial" in out


@pytest.mark.mqtt
def test_abort_rolls_back_what_a_rollout_touched(fleet_setup, tmp_path: Path, broker,
                                                 signing_keys, capsys) -> None:
    start, config, new_sha = fleet_setup
    fleet = start(6)
    last = sorted(fleet.devices)[-1]
    fleet.disconnect(last)
    wait_until(lambda: _offline(broker, last), 10, "the last will")
    report = start_rollout(config())
    assert report.state == "running" and len(fleet.on_model(new_sha)) == 5
    code, out, err = run_cli(["rollout", "abort", report.rollout_id, "--broker", broker.url,
                              "--key", str(signing_keys[0]), "--db", str(tmp_path / "r.sqlite"),
                              "--json"], capsys)
    assert code == 0, err
    aborted = json.loads(out)
    assert aborted["state"] == "aborted"
    assert aborted["counts"] == {"rolled-back": 5, "skipped": 1}
    assert not fleet.on_model(new_sha)
    code, _, err = run_cli(["rollout", "resume", report.rollout_id, "--broker", broker.url,
                            "--key", str(signing_keys[0]), "--db", str(tmp_path / "r.sqlite")],
                           capsys)
    assert code == 2 and "is aborted" in err


@pytest.mark.unit
def test_the_agent_refuses_a_bad_group_or_tag_in_one_line(tmp_path: Path, signing_keys,
                                                          capsys) -> None:
    from device_agent.cli import main

    base = ["--broker", "mqtt://127.0.0.1:1", "--device-id", "d", "--data-dir",
            str(tmp_path / "d"), "--trust-key", str(signing_keys[1])]
    for extra, message in ((["--group", "a/b"], "group 'a/b' is not valid"),
                           (["--tag", "novalue"], "not KEY=VALUE"),
                           (["--tag", "k=v w"], "tag k=v w is not valid")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def _offline(broker, device: str) -> bool:
    from fleet_helpers import status_of

    return (status_of(broker, device) or {}).get("state") == "offline"


@pytest.mark.mqtt
def test_a_host_killed_mid_rollout_resumes_without_deploying_twice(
        fleet_setup, tmp_path: Path, broker, signing_keys, cnn_int8, capsys) -> None:
    start, _, new_sha = fleet_setup
    fleet = start(80)
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "edgeq.cli", "rollout", str(cnn_int8), "--group", "fleet",
           "--broker", broker.url, "--key", str(signing_keys[0]), "--db", str(db),
           "--canary", "5", "--waves", "1.5", "--gate", "p95-latency<=50%", "--bench-runs", "5"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_until(lambda: len(fleet.on_model(new_sha)) >= 15, 60, "two waves deployed")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    store = open_store(str(db))
    try:
        [rollout] = store.rollouts()
        assert rollout["state"] == "running"
    finally:
        store.close()
    code, out, err = run_cli(["rollout", "resume", rollout["id"], "--broker", broker.url,
                              "--key", str(signing_keys[0]), "--db", str(db), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["state"] == "done"
    assert all(d.deploys == [new_sha] for d in fleet.devices.values())


@pytest.mark.mqtt
def test_rollout_state_lives_in_postgresql_too(fleet_setup, postgres_url: str) -> None:
    start, config, new_sha = fleet_setup
    fleet = start(12)
    report = start_rollout(config(db=postgres_url))
    assert report.state == "done" and len(fleet.on_model(new_sha)) == 12
    store = open_store(postgres_url)
    try:
        assert store.rollout(report.rollout_id)["state"] == "done"
        assert len(store.rollout_devices(report.rollout_id)) == 12
    finally:
        store.close()


@pytest.mark.mqtt
def test_cli_rollout_errors_are_one_line(tmp_path: Path, broker, signing_keys, cnn_int8,
                                         capsys) -> None:
    b = ["--broker", broker.url, "--key", str(signing_keys[0]), "--db", str(tmp_path / "r.db")]
    cases = [([str(cnn_int8), *b], 2, "needs --group"),
             ([str(cnn_int8), *b, "--group", "g", "--canary", "0"], 2, "--canary '0'"),
             ([str(cnn_int8), *b, "--group", "g", "--gate", "p95<=3"], 2, "unknown gate"),
             ([str(cnn_int8), *b, "--group", "nobody"], 1, "no device matches group nobody"),
             (["status", "ro-nope", "--db", str(tmp_path / "r.db")], 2, "no rollout 'ro-nope'"),
             (["pin", "--db", str(tmp_path / "r.db"), "--model", "x"], 2, "exactly one of")]
    for args, code, message in cases:
        got, _, err = run_cli(["rollout", *args], capsys)
        assert got == code and message in err and len(err.strip().splitlines()) == 1, (args, err)


# -- real agents ----------------------------------------------------------------------------------

@pytest.mark.mqtt
@pytest.mark.slow
def test_real_agents_roll_out_and_back(tmp_path: Path, broker, agents, signing_keys, cnn_int8,
                                       capsys) -> None:
    """Two real agents in group lab: a rollout reaches both; one whose agreement gate cannot
    hold halts on the canary and the real signed rollback brings it back."""
    from device_agent.signing import sha256_file

    for d in ("pi-a", "pi-b"):
        agents(d, "--group", "lab", "--tag", "site=bench")
        wait_online(broker, d)
    code, out, _ = run_cli(["devices", "--broker", broker.url, "--tag", "site=bench", "--json"],
                           capsys)
    assert code == 0 and [s["groups"] for s in json.loads(out)] == [["lab"], ["lab"]]
    first = _real_model(tmp_path, "first")
    for d in ("pi-a", "pi-b"):
        deploy_to(broker, d, first, signing_keys[0])
    b = ["--broker", broker.url, "--key", str(signing_keys[0]), "--db", str(tmp_path / "r.db")]
    code, out, err = run_cli(["rollout", str(cnn_int8), "--group", "lab", "--canary", "1", *b,
                              "--eval", str(bundled("digits_cnn")[2]), "--eval-samples", "20",
                              "--gate", "agreement>=0.99", "--bench-runs", "5", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["counts"] == {"verified": 2}
    for d in ("pi-a", "pi-b"):
        wait_online(broker, d, sha256_file(cnn_int8))
    code, out, err = run_cli(["rollout", str(first), "--group", "lab", "--canary", "1", *b,
                              "--gate", "task>=2", "--bench-runs", "5"], capsys)
    assert code == 1 and "HALT" in out and "task" in out
    wait_online(broker, "pi-a", sha256_file(cnn_int8))  # the canary is back
    wait_online(broker, "pi-b", sha256_file(cnn_int8))  # never touched


def _real_model(tmp_path: Path, name: str) -> Path:
    """Another real int8 model (the digits MLP), different bytes from cnn_int8."""
    from edgeq.convert import ConvertConfig, convert

    model, calib, _ = bundled("digits_outlier_mlp")
    convert(ConvertConfig(model, tmp_path / name, calib, show_progress=False))
    return tmp_path / name / "model.tflite"
