"""The agent as Termux runs it: a venv with tflite-runtime and no ai-edge-litert (Termux packages
python-tflite-runtime; ai-edge-litert has no Android wheel), through the real broker: deploy,
benchmark, evaluate, the report stored by the collector. Build the venv with
`.ci/termux-env.sh` (CI does; EDGEQ_TERMUX_VENV overrides where it lives)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, bundled, run_cli
from mqtt_env import AgentProcess, CollectorProcess, stored_rows, wait_until

from device_agent.connection import Broker
from edgeq.fleet.remote import request_report

TERMUX_VENV = Path(os.environ.get("EDGEQ_TERMUX_VENV", Path.home() / ".cache/edgeq/termux-venv"))

pytestmark = pytest.mark.mqtt


@pytest.fixture(scope="module")
def termux_python() -> str:
    python = TERMUX_VENV / "bin" / "python"
    if not (TERMUX_VENV / ".complete").is_file():
        why = f"no Termux-like venv at {TERMUX_VENV}; build it with .ci/termux-env.sh"
        if os.environ.get("EDGEQ_REQUIRE_TERMUX"):
            pytest.fail(why)
        pytest.skip(why)
    return str(python)


def test_termux_like_agent_deploy_bench_evaluate(tmp_path: Path, broker, termux_python: str,
                                                 cnn_int8: Path, signing_keys, capsys) -> None:
    agent = AgentProcess(broker.url, "phone", tmp_path / "phone", signing_keys[1],
                         ("--runtime", "tflite-runtime"), python=(termux_python,),
                         env={"PYTHONPATH": str(REPO)}).start()
    collector = CollectorProcess(broker.url, tmp_path / "r.sqlite").start()
    b = ["--broker", broker.url]
    try:
        wait_until(lambda: '"online"' in run_cli(["devices", *b, "--json"], capsys)[1], 60,
                   "the Termux-like agent online")
        code, out, err = run_cli(["deploy", str(cnn_int8), "--device", "phone", *b, "--key",
                                  str(signing_keys[0]), "--eval", str(bundled("digits_cnn")[2]),
                                  "--eval-samples", "100", "--json"], capsys)
        assert code == 0, err + agent.log()
        assert json.loads(out)["runtime"] == "tflite-runtime"
        code, out, err = run_cli(["bench", "--device", "phone", *b, "--runs", "30",
                                  "--power-window", "0.2", "--json"], capsys)
        assert code == 0, err + agent.log()
        report = json.loads(out)
        assert report["runtime"]["name"] == "tflite-runtime"
        assert report["runtime"]["version"].startswith("2.14")
        assert report["latency"]["runs"] >= 30 and report["latency"]["p50_ms"] > 0
        agree = report["accuracy"]["agreement"]
        assert agree["samples"] == 100 and agree["max_abs_diff_lsb"] <= 1
        evaluated = request_report(Broker.from_url(broker.url), "phone", "evaluate", 60)
        assert evaluated["errors"] == [] and evaluated["runtime"]["name"] == "tflite-runtime"
        assert evaluated["accuracy"]["task"]["value"] == pytest.approx(
            report["accuracy"]["task"]["value"])
        wait_until(lambda: len(stored_rows(tmp_path / "r.sqlite")) == 2, 30, "2 stored reports")
        assert "ai_edge_litert" not in agent.log()
    finally:
        collector.stop()
        agent.stop()
