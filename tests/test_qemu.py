"""The real agent on aarch64: an arm64 Debian Python with aarch64 wheels (ai-edge-litert,
numpy, paho-mqtt, cryptography) under QEMU user-mode emulation, deployed to and benchmarked
through the host's mosquitto, its report stored by the collector. Build the environment with
`.ci/arm64-env.sh` (CI does; EDGEQ_ARM64_DIR overrides where it lives)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import REPO, bundled, run_cli
from mqtt_env import AgentProcess, CollectorProcess, stored_rows, wait_until

ARM64_DIR = Path(os.environ.get("EDGEQ_ARM64_DIR", Path.home() / ".cache" / "edgeq" / "arm64"))


@pytest.fixture(scope="module")
def arm64_python() -> tuple[tuple[str, ...], Path]:
    """(command that runs the emulated python3.11, its site-packages with aarch64 wheels)."""
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None or not (ARM64_DIR / ".complete").is_file():
        why = (f"no arm64 environment at {ARM64_DIR} (qemu-aarch64-static: {qemu}); build it "
               "with .ci/arm64-env.sh")
        if os.environ.get("EDGEQ_REQUIRE_ARM64"):
            pytest.fail(why)
        pytest.skip(why)
    root = ARM64_DIR / "root"
    return (qemu, "-L", str(root), str(root / "usr" / "bin" / "python3.11")), ARM64_DIR / "site"


def test_arm64_agent_under_qemu_deploy_bench_collect(tmp_path: Path, broker, arm64_python,
                                                     cnn_int8: Path, signing_keys, capsys,
                                                     record_property) -> None:
    python, site = arm64_python
    agent = AgentProcess(broker.url, "pi-arm64", tmp_path / "arm64", signing_keys[1],
                         ("--child-python", shlex.join(python)), python=python,
                         env={"PYTHONPATH": f"{site}:{REPO}"}).start()
    db = tmp_path / "r.sqlite"
    collector = CollectorProcess(broker.url, db).start()
    try:
        b = ["--broker", broker.url]
        status = wait_until(lambda: (o := run_cli(["devices", *b, "--json"], capsys)[1])
                            and '"online"' in o and json.loads(o), 120, "the arm64 agent online")
        assert status[0]["arch"] == "aarch64", agent.log()
        code, out, err = run_cli(["deploy", str(cnn_int8), "--device", "pi-arm64", *b, "--key",
                                  str(signing_keys[0]), "--eval", str(bundled("digits_cnn")[2]),
                                  "--eval-samples", "120", "--timeout", "180", "--json"], capsys)
        assert code == 0, err + agent.log()
        assert json.loads(out)["runtime"] == "litert"
        code, out, err = run_cli(["bench", "--device", "pi-arm64", *b, "--runs", "50",
                                  "--power-window", "0.2", "--timeout", "300", "--json"], capsys)
        assert code == 0, err + agent.log()
        report = json.loads(out)
        lat, agree = report["latency"], report["accuracy"]["agreement"]
        assert report["arch"] == "aarch64" and report["runtime"]["name"] == "litert"
        assert lat["runs"] >= 50 and 0 < lat["p50_ms"] <= lat["p99_ms"] < 1000
        assert agree["samples"] == 120 and 0.0 <= agree["exact_match_rate"] <= 1.0
        # aarch64 kernels may round differently from the x86 host; the export tolerance holds
        assert agree["max_abs_diff_lsb"] <= 2 and agree["cosine"] > 0.999
        record_property("exact_match_rate", agree["exact_match_rate"])
        record_property("max_abs_diff_lsb", agree["max_abs_diff_lsb"])
        record_property("p50_ms_emulated", lat["p50_ms"])
        wait_until(lambda: stored_rows(db), 30, "the report in SQLite")
        with sqlite3.connect(db) as conn:
            arch, exact, lsb = conn.execute("SELECT arch, exact_match, max_lsb FROM reports "
                                            "WHERE report_id = ?", (report["report_id"],)).fetchone()
        assert (arch, exact, lsb) == ("aarch64", agree["exact_match_rate"], agree["max_abs_diff_lsb"])
    finally:
        collector.stop()
        agent.stop()
