"""The device agent as a real process against a real mosquitto: deploy, benchmark, evaluate, and
every failure path of the issue (nothing lost, the old model always stays active)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import bundled
from fleet_helpers import (
    QUICK,
    active_sha,
    deploy_to,
    host,
    ping,
    raw_deploy,
    signed_bundle,
    status_of,
    wait_online,
)
from mqtt_env import stored_rows, wait_until

from device_agent.protocol import encode, topic
from device_agent.signing import generate_keys
from edgeq.errors import DeviceRefused, DeviceUnreachable
from edgeq.fleet.remote import request_report
from edgeq.fleet.session import HostSession


@pytest.fixture()
def deployed(broker, agents, cnn_int8: Path, signing_keys):
    """An agent dev1 with the int8 CNN (and its eval set) active."""
    agent = agents("dev1")
    wait_online(broker, "dev1")
    verdict = deploy_to(broker, "dev1", cnn_int8, signing_keys[0], eval=bundled("digits_cnn")[2])
    return agent, verdict


# -- happy paths ---------------------------------------------------------------------------------

def test_deploy_then_benchmark_reports_latency_power_and_accuracy(broker, deployed) -> None:
    _agent, verdict = deployed
    assert verdict["state"] == "activated"
    model_sha = verdict["model"]["sha256"]
    assert wait_online(broker, "dev1", model_sha)["model"]["name"] == "digits_cnn"
    result = request_report(host(broker), "dev1", "benchmark", 60, **QUICK)
    lat, power, acc = result["latency"], result["power"], result["accuracy"]
    assert result["errors"] == [] and result["model"]["sha256"] == model_sha
    assert lat["runs"] >= 20 and 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert lat["inputs"] == "eval set" and len(lat["samples_ms"]) == lat["runs"]
    assert lat["init_ms"] > 0 and lat["peak_rss_bytes"] > 0
    # a number or an honest null with its reason - never both missing
    assert (power["energy_per_inference_mj"] is not None) != bool(power["reason"])
    assert acc["samples"] == 360 and acc["task"]["metric"] == "accuracy"
    # same LiteRT as the host: bit-exact, so the device's accuracy is the host's
    assert acc["agreement"]["exact_match_rate"] == 1.0 and acc["agreement"]["max_abs_diff_lsb"] == 0
    assert acc["task"]["value"] == acc["host_task"]["value"] > 0.9


def test_tflm_agent_reports_agreement_with_the_host(broker, agents, cnn_int8, signing_keys) -> None:
    agents("mcu1", "--runtime", "tflm")
    wait_online(broker, "mcu1")
    verdict = deploy_to(broker, "mcu1", cnn_int8, signing_keys[0], eval=bundled("digits_cnn")[2],
                        eval_samples=50)
    assert verdict["runtime"] == "tflm"
    result = request_report(host(broker), "mcu1", "evaluate", 60)
    assert result["runtime"]["name"] == "tflm" and result["latency"] is None
    agreement = result["accuracy"]["agreement"]
    assert agreement["samples"] == 50 and agreement["max_abs_diff_lsb"] <= 2  # TFLM vs LiteRT
    assert agreement["cosine"] > 0.999


def test_preprocessing_contract_travels_and_is_applied_on_the_device(
        tmp_path: Path, broker, agents, signing_keys) -> None:
    from edgeq.convert import ConvertConfig, convert

    model, calib, eval_ = bundled("wine_collapse")
    out = tmp_path / "wine"
    convert(ConvertConfig(model, out, calib, eval_, rewrites=("preprocessing",), show_progress=False))
    assert (out / "preprocessing.json").is_file()
    agents("dev2")
    wait_online(broker, "dev2")
    verdict = deploy_to(broker, "dev2", out / "model.tflite", signing_keys[0], eval=eval_)
    assert verdict["bundle"]["preprocessing"]
    acc = request_report(host(broker), "dev2", "evaluate", 60)["accuracy"]
    # raw wine features: without the contract the int8 input would saturate and disagree
    assert acc["agreement"]["exact_match_rate"] == 1.0
    assert acc["task"]["value"] == acc["host_task"]["value"] > 0.85


# -- deploy failures: the old model stays active -------------------------------------------------

def test_corrupted_chunk_is_rejected_and_the_old_model_keeps_answering(
        tmp_path: Path, broker, deployed, cnn_int8, signing_keys) -> None:
    before = active_sha(broker, "dev1")
    data, manifest = signed_bundle(tmp_path, cnn_int8, signing_keys[0], bundled("digits_cnn")[2])
    with pytest.raises(DeviceRefused, match=r"corrupted in transfer.*active model unchanged"):
        raw_deploy(broker, "dev1", data, manifest, corrupt=2)
    assert active_sha(broker, "dev1") == before
    result = request_report(host(broker), "dev1", "benchmark", 60, **QUICK)
    assert result["errors"] == [] and result["model"]["sha256"] == before
    assert not any(deployed[0].data_dir.joinpath("incoming").iterdir())


@pytest.mark.parametrize("signature", ["wrong key", "missing"])
def test_unsigned_or_wrongly_signed_bundle_is_rejected_before_transfer(
        tmp_path: Path, broker, deployed, cnn_int8, signature: str) -> None:
    other_key, _ = generate_keys(tmp_path / "other")
    data, manifest = signed_bundle(tmp_path, cnn_int8, other_key)
    if signature == "missing":
        manifest["signature"] = ""
    with pytest.raises(DeviceRefused, match=r"signature does not match|not signed|signed by key"):
        raw_deploy(broker, "dev1", data, manifest)
    assert active_sha(broker, "dev1") == deployed[1]["model"]["sha256"]


def test_oversize_bundle_is_rejected_before_any_chunk(broker, agents, cnn_int8, signing_keys) -> None:
    agent = agents("tiny", "--max-bundle-mb", "0.005")
    wait_online(broker, "tiny")
    with pytest.raises(DeviceRefused, match="over this device's limit of 5,242 bytes"):
        deploy_to(broker, "tiny", cnn_int8, signing_keys[0])
    assert "receiving" not in agent.log()  # no transfer was ever opened


def test_model_that_fails_to_load_is_rolled_back(tmp_path: Path, broker, agents, cnn_int8,
                                                 signing_keys, gelu_int8: Path) -> None:
    agents("mcu2", "--runtime", "tflm")
    wait_online(broker, "mcu2")
    good = deploy_to(broker, "mcu2", cnn_int8, signing_keys[0])["model"]["sha256"]
    with pytest.raises(DeviceRefused, match=r"does not load and invoke in tflm.*active model "
                                            "unchanged: digits_cnn"):
        deploy_to(broker, "mcu2", gelu_int8, signing_keys[0])
    assert active_sha(broker, "mcu2") == good
    assert request_report(host(broker), "mcu2", "evaluate", 60)["errors"] == []


def test_rollback_swaps_back_to_the_previous_model(broker, deployed, gelu_int8, signing_keys,
                                                   capsys) -> None:
    from conftest import run_cli

    first = deployed[1]["model"]["sha256"]
    second = deploy_to(broker, "dev1", gelu_int8, signing_keys[0])["model"]["sha256"]
    b = ["--device", "dev1", "--broker", broker.url, "--key", str(signing_keys[0])]
    code, out, err = run_cli(["rollback", *b], capsys)
    assert code == 0 and "now runs digits_cnn" in out, err
    assert active_sha(broker, "dev1") == first
    assert run_cli(["rollback", *b], capsys)[0] == 0  # previous is now the gelu model
    assert active_sha(broker, "dev1") == second


def test_rollback_without_a_previous_model(broker, agents, cnn_int8, signing_keys, capsys) -> None:
    from conftest import run_cli

    agents("dev6")
    wait_online(broker, "dev6")
    deploy_to(broker, "dev6", cnn_int8, signing_keys[0])
    code, _, err = run_cli(["rollback", "--device", "dev6", "--broker", broker.url, "--key",
                            str(signing_keys[0])], capsys)
    assert code == 1 and "no previous model to roll back to" in err
    assert active_sha(broker, "dev6") == hashlib.sha256(cnn_int8.read_bytes()).hexdigest()


def test_stalled_transfer_is_aborted_and_cleaned_up(tmp_path: Path, broker, agents, cnn_int8,
                                                    signing_keys) -> None:
    agent = agents("slow", "--transfer-timeout", "1")
    wait_online(broker, "slow")
    data, manifest = signed_bundle(tmp_path, cnn_int8, signing_keys[0], chunk_size=2048,
                                   device="slow")
    with pytest.raises(DeviceRefused, match=r"stalled .* after 1 of"):
        raw_deploy(broker, "slow", data, manifest, send=1)
    assert not any((agent.data_dir / "incoming").iterdir())
    assert ping(broker, "slow")["status"]["model"] is None


def test_deploy_to_an_offline_device_fails_fast_and_sends_nothing(
        broker, agents, cnn_int8, signing_keys) -> None:
    agent = agents("gone")
    wait_online(broker, "gone")
    agent.stop()
    with pytest.raises(DeviceUnreachable, match="'gone' is offline \\(agent stopped"):
        deploy_to(broker, "gone", cnn_int8, signing_keys[0])
    with pytest.raises(DeviceUnreachable, match="never connected"):
        deploy_to(broker, "nobody", cnn_int8, signing_keys[0])


# -- commands are data ---------------------------------------------------------------------------

@pytest.mark.parametrize("payload,message", [
    # (raw cmd payload, expected error text)
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (encode({"id": "c1", "type": "reboot"}), "unknown type 'reboot'"),
    (encode({"id": "c2", "type": "benchmark", "runs": "many"}), "'runs' must be an integer"),
    (encode({"id": "c3", "type": "benchmark", "runs": 10, "shell": "rm -rf /"}),
     "unknown field 'shell'"),
    (encode({"id": "c4", "type": "benchmark"}), "no model deployed"),
])
def test_malformed_and_unknown_commands_get_error_events(broker, agents, payload: bytes,
                                                         message: str) -> None:
    agent = agents("dev3")
    wait_online(broker, "dev3")
    with HostSession(host(broker)) as s:
        s.subscribe(topic("dev3", "event"))
        s.client.publish(topic("dev3", "cmd"), payload, qos=1)
        _, event = s.wait_for(lambda n, m: m.get("level") == "error", 15, "error event")
    assert message in event["message"]
    assert ping(broker, "dev3")["state"] == "pong" and agent.proc.poll() is None


def test_a_redelivered_command_runs_once(broker, deployed) -> None:
    cmd = encode({"id": "twice", "type": "benchmark", "runs": 5, "power": False})
    with HostSession(host(broker)) as s:
        s.subscribe(topic("dev1", "result"))
        for _ in range(2):  # what a QoS 1 redelivery after a reconnect looks like
            s.client.publish(topic("dev1", "cmd"), cmd, qos=1).wait_for_publish(5)
        s.wait_for(lambda n, m: m.get("cmd_id") == "twice", 30, "the result")
        with pytest.raises(DeviceUnreachable):
            s.wait_for(lambda n, m: m.get("cmd_id") == "twice", 3, "a second result")
    assert "command twice: already taken" in deployed[0].log()


def test_killed_agent_is_marked_offline_by_its_last_will(broker, agents) -> None:
    agent = agents("dev4")
    wait_online(broker, "dev4")
    agent.kill()
    status = wait_until(lambda: (s := status_of(broker, "dev4")) and s["state"] == "offline" and s,
                        15, "offline status")
    assert status["reason"] == "connection lost (last will)"


# -- results: spooled, resent, stored once -------------------------------------------------------

# A broker without persistence forgets the collector's subscription when killed: what the agent
# resends first is dropped, and only the end-to-end ack + the collector's resend request save it.
@pytest.mark.parametrize("broker", [True, False], indirect=True, ids=["persistent", "in-memory"])
def test_broker_killed_and_restarted_every_result_arrives_once(tmp_path: Path, broker, deployed,
                                                               collectors) -> None:
    db = tmp_path / "reports.sqlite"
    collector = collectors(db=db)
    wait_until(lambda: "subscribed" in collector.log(), 20, "collector subscribed")
    n = 4
    with HostSession(host(broker)) as s:  # commands taken by the agent before the broker dies
        for k in range(n):
            s.client.publish(topic("dev1", "cmd"), encode({"id": f"b{k}", "type": "benchmark",
                                                           "runs": 5, "min_seconds": 1.0,
                                                           "power": False, "evaluate": False}),
                             qos=1).wait_for_publish(5)
    wait_until(lambda: len(stored_rows(db)) >= 1, 30, "first result stored")
    broker.kill()  # the agent keeps producing results with nowhere to send them
    wait_until(lambda: len(list((deployed[0].data_dir / "spool").glob("*.json"))) >= 2, 30,
               "results spooled on the device")
    broker.start()
    rows = wait_until(lambda: (r := stored_rows(db)) and len(r) >= n and r, 60, f"{n} results")
    assert sorted(r[0] for r in rows) == sorted({r[0] for r in rows}) and len(rows) == n
    wait_until(lambda: not list((deployed[0].data_dir / "spool").glob("*.json")), 10, "spool empty")


def test_results_spooled_before_an_agent_restart_are_delivered(tmp_path: Path, broker, agents,
                                                                collectors, cnn_int8,
                                                                signing_keys) -> None:
    agent = agents("dev5")
    wait_online(broker, "dev5")
    deploy_to(broker, "dev5", cnn_int8, signing_keys[0])
    with HostSession(host(broker)) as s:
        s.subscribe(topic("dev5", "event"))
        s.client.publish(topic("dev5", "cmd"), encode({"id": "slow", "type": "benchmark",
                                                       "min_seconds": 2.0, "power": False}), qos=1)
        s.answer("dev5", "slow", ("started",), 15, "benchmark started")
    broker.kill()
    spool = agent.data_dir / "spool"
    wait_until(lambda: list(spool.glob("*.json")), 30, "result spooled while the broker is down")
    agent.kill()  # the spooled result must survive the agent too
    broker.start()
    db = tmp_path / "reports.sqlite"
    collectors(db=db)
    agents("dev5")  # same data dir: resends its spool after connecting
    rows = wait_until(lambda: stored_rows(db), 60, "the spooled result in SQLite")
    assert len(rows) == 1 and rows[0][1] == "dev5"
