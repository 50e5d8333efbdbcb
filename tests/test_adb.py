"""Phones over adb without a phone: the benchmark tools' output formats parsed, and the bridge
(`edgeq-agent --adb all`) driving two fake phones (tests/fake_adb: an `adb` that maps a phone to
a directory, and a benchmark_model that really runs the model with LiteRT and prints the real
tool's format) through the real broker, the collector storing both reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, bundled, run_cli
from mqtt_env import AgentProcess, CollectorProcess, stored_rows, wait_until

from device_agent.adb import phone_device_id
from device_agent.toolbench import (
    ToolOutputError,
    parse_benchmark_litert,
    parse_benchmark_model,
    parse_tool_output,
)

FAKE = REPO / "tests" / "fake_adb"

# What TFLite's benchmark_model prints (the format of its README's example run on a phone).
CLASSIC = """STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/mobilenet_quant_v1_224.tflite]
Loaded model /data/local/tmp/mobilenet_quant_v1_224.tflite
The input model file size (MB): 4.27635
Initialized session in 20.617ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=34 first=28379 curr=14380 min=13952 max=28379 avg=14883.6 std=2367

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=69 first=14428 curr=14319 min=14063 max=15066 avg=14386.8 std=200

Inference timings in us: Init: 20617, First inference: 28379, Warmup (avg): 14883.6, Inference (avg): 14386.8
Memory footprint delta from the start of the tool (MB): init=2.89844 overall=9.81641
"""

# Captured from ai-edge-litert 2.3's benchmark_litert_model on this machine (digits CNN, int8).
LITERT_BLOCK = """========================================
 BENCHMARK RESULTS
========================================
Model initialization:  4.72 ms
Warmup (first):        0.05 ms
Warmup (avg):          0.01 ms (5 runs)
Inference (avg):       0.02 ms (20 runs)
Inference (min):       0.01 ms
Inference (max):       0.04 ms
Inference (median):    0.02 ms
Inference (std):       0.01 ms
Inference (p5):        0.01 ms
Inference (p95):       0.03 ms
Throughput:            21.53 MB/s
Fully accelerated:     True
========================================"""
LITERT_JSON = """{"model": "m.tflite", "model_size_mb": 0.01, "accelerators": ["CPU"],
 "signature": "serving_default", "fully_accelerated": true, "num_threads": 1,
 "latency": {"init_ms": 4.72, "warmup_first_ms": 0.05, "warmup_avg_ms": 0.01,
  "num_warmup_runs": 5, "avg_ms": 0.02, "min_ms": 0.01, "max_ms": 0.04, "median_ms": 0.02,
  "std_ms": 0.01, "p5_ms": 0.01, "p95_ms": 0.03, "num_runs": 20}, "throughput_mb_s": 21.53}"""


@pytest.mark.unit
def test_classic_benchmark_model_output_in_ms_without_invented_percentiles() -> None:
    lat = parse_benchmark_model(CLASSIC)
    assert lat["runs"] == 69 and lat["mean_ms"] == pytest.approx(14.3868)
    assert (lat["min_ms"], lat["max_ms"], lat["std_ms"]) == (14.063, 15.066, 0.2)
    assert lat["init_ms"] == pytest.approx(20.617) and lat["first_inference_ms"] == 28.379
    assert "p50_ms" not in lat and "no percentiles" in lat["source"]


@pytest.mark.unit
def test_litert_tool_block_and_json_give_the_same_report() -> None:
    block, doc = parse_benchmark_litert(LITERT_BLOCK), parse_tool_output("log\n" + LITERT_JSON)
    assert block == doc
    assert doc["runs"] == 20 and doc["p50_ms"] == 0.02 and doc["p95_ms"] == 0.03
    assert "p99_ms" not in doc and "no p90/p99" in doc["source"]


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "Failed to load model\n", "count=3 curr=1"])
def test_tool_output_without_timings_says_what_was_expected(text: str) -> None:
    with pytest.raises(ToolOutputError, match="printed no"):
        parse_tool_output(text)


@pytest.mark.unit
def test_phone_ids_are_protocol_valid() -> None:
    assert phone_device_id("phone-", "R58M41ABCDE", "Pixel 8 Pro") == "phone-Pixel-8-Pro-R58M41ABCDE"
    assert phone_device_id("", "192.168.1.7:5555", "") == "192.168.1.7-5555"


def _fake_phone(root: Path, serial: str, model: str, state: str = "device") -> None:
    phone = root / serial
    (phone / "fs").mkdir(parents=True)
    (phone / "props.json").write_text(json.dumps({
        "ro.product.model": model, "ro.build.version.release": "14", "ro.build.version.sdk": "34",
        "ro.product.cpu.abi": "arm64-v8a", "ro.soc.model": "SM8650", "ro.board.platform": "pineapple",
        "ro.product.manufacturer": "Fake"}))
    (phone / "state").write_text(state)


def _battery(root: Path, serial: str, status: str) -> None:
    node = root / serial / "fs" / "sys/class/power_supply/battery"
    node.mkdir(parents=True)
    for leaf, value in (("status", status), ("current_now", "-350000"), ("voltage_now", "3950000")):
        (node / leaf).write_text(value + "\n")


@pytest.mark.unit
def test_phone_battery_over_adb_and_why_usb_falsifies_it(tmp_path: Path, monkeypatch) -> None:
    from device_agent.adb import Adb, PhoneBatteryProbe
    from device_agent.power import ProbeUnavailable

    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path))
    _fake_phone(tmp_path, "ON", "Pixel 8")
    _battery(tmp_path, "ON", "Discharging")
    probe = PhoneBatteryProbe(Adb("ON", str(FAKE / "adb")))
    assert probe.read().watts == pytest.approx(0.35 * 3.95) and "USB" in probe.notes[0]
    _fake_phone(tmp_path, "USB", "Pixel 8")
    _battery(tmp_path, "USB", "Charging")
    with pytest.raises(ProbeUnavailable, match="wireless adb"):
        PhoneBatteryProbe(Adb("USB", str(FAKE / "adb")))


@pytest.mark.mqtt
def test_bridge_deploys_to_and_benchmarks_two_fake_phones(tmp_path: Path, broker, cnn_int8,
                                                          signing_keys, capsys) -> None:
    root = tmp_path / "phones"
    _fake_phone(root, "SERIAL1", "Pixel 8")
    _fake_phone(root, "SERIAL2", "Galaxy S24")
    _fake_phone(root, "SERIAL3", "Locked", state="unauthorized")  # not ready: no agent
    _battery(root, "SERIAL1", "Discharging")  # wireless adb, unplugged: its battery can measure
    bridge = AgentProcess(broker.url, "unused", tmp_path / "bridge", signing_keys[1],
                          ("--adb", "all", "--adb-binary", str(FAKE / "adb"),
                           "--benchmark-binary", str(FAKE / "benchmark_model"),
                           "--group", "phones"),
                          env={"FAKE_ADB_ROOT": str(root)})
    bridge.start()
    collector = CollectorProcess(broker.url, tmp_path / "r.sqlite").start()
    b = ["--broker", broker.url]
    phones = ["phone-Pixel-8-SERIAL1", "phone-Galaxy-S24-SERIAL2"]
    try:
        statuses = wait_until(lambda: (o := run_cli(["devices", *b, "--json"], capsys)[1])
                              and o.count('"online"') == 2 and json.loads(o), 60,
                              "two phones online")
        assert [s["device"] for s in statuses] == sorted(phones), bridge.log()
        assert statuses[0]["phone"]["android"] == "14" and statuses[0]["phone"]["abi"] == "arm64-v8a"
        assert statuses[0]["runtime"]["name"] == "adb" and statuses[0]["groups"] == ["phones"]
        for phone in phones:
            code, out, err = run_cli(["deploy", str(cnn_int8), "--device", phone, *b, "--key",
                                      str(signing_keys[0]), "--eval",
                                      str(bundled("digits_cnn")[2]), "--eval-samples", "4",
                                      "--json"], capsys)
            assert code == 0, err + bridge.log()
            code, out, err = run_cli(["bench", "--device", phone, *b, "--runs", "20",
                                      "--power-window", "0.5", "--json"], capsys)
            assert code == 0, err + bridge.log()
            report = json.loads(out)
            lat, agree = report["latency"], report["accuracy"]["agreement"]
            assert report["runtime"]["name"] == "adb" and lat["runs"] == 20
            # whole microseconds, as the real tool prints them: a sub-us run reads 0
            assert 0 <= lat["min_ms"] <= lat["max_ms"] and lat["mean_ms"] >= 0 and lat["init_ms"] > 0
            assert "benchmark_model" in lat["source"] and "p50_ms" not in lat
            power = report["power"]
            if phone.endswith("SERIAL1"):
                assert power["source"] == "adb-battery" and power["busy_w"] == pytest.approx(
                    0.35 * 3.95), power
            else:
                assert power["busy_w"] is None and "battery" in power["reason"]
            # the phone's tool runs XNNPACK, the host's reference the builtin kernels: <= 1 LSB
            assert agree["samples"] == 4 and agree["max_abs_diff_lsb"] <= 1
        assert (root / "SERIAL1" / "fs" / "data/local/tmp/edgeq/benchmark_model").is_file()
        wait_until(lambda: len(stored_rows(tmp_path / "r.sqlite")) == 2, 30, "both reports stored")
    finally:
        collector.stop()
        bridge.stop()


@pytest.mark.mqtt
def test_bridge_refuses_without_a_tool_or_a_phone(tmp_path: Path, broker, signing_keys) -> None:
    from device_agent.cli import main

    base = ["--broker", broker.url, "--data-dir", str(tmp_path), "--trust-key",
            str(signing_keys[1]), "--adb-binary", str(FAKE / "adb")]
    os.environ["FAKE_ADB_ROOT"] = str(tmp_path / "none")
    (tmp_path / "none").mkdir()
    try:
        assert main([*base, "--adb", "all"]) == 2
        assert main([*base, "--adb", "all", "--benchmark-binary", str(FAKE / "benchmark_model")]) == 2
    finally:
        del os.environ["FAKE_ADB_ROOT"]
