"""Benchmark the fleet path on a real mosquitto (loopback), each figure against a baseline run in
the same process. Prints JSON.

- deploy: `edgeq deploy` of a ~1 MB and a ~10 MB int8 model (bundle without eval data) to a real
  agent: transfer = first chunk sent .. the device reports every chunk received and its sha256
  checked; vs `mosquitto_pub -q 1 -f` of the same bundle bytes until a `mosquitto_sub` has them
  (process start included). ratio = raw median / edgeq median of --repeat runs (target >= 0.5),
  with min/max, since on 2 cores host, broker and agent compete and single runs vary 4x. Run on
  mosquitto's default config and with `set_tcp_nodelay true` (docker/mosquitto/mosquitto.conf).
- collector: `edgeq collect` (a process) while N simulated agents (MQTT clients) publish results
  at a fixed total rate: results/s stored, loss (target 0), collector CPU share.
- agent overhead: the agent's reported p50 vs a bare LiteRT invoke loop on the same model in this
  process (1 thread, no XNNPACK; target within 5%).

    python bench/fleet_bench.py [--agents 200] [--rate 400] [--seconds 15] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import contextlib

import numpy as np
from mqtt_env import AgentProcess, CollectorProcess, Mosquitto, stored_rows, wait_until

from device_agent.connection import Broker, make_client
from device_agent.protocol import encode, topic
from device_agent.runtimes import LiteRTRuntime
from device_agent.signing import generate_keys
from edgeq.fleet.deploy import DeployConfig, build_bundle, deploy
from edgeq.fleet.remote import request_report
from edgeq.fleet.session import HostSession


def mlp_int8(root: Path, inputs: int, hidden: tuple[int, ...]) -> Path:
    """An int8 MLP converted by edgeq (weights dominate its size: ~1 byte per parameter)."""
    import keras

    from edgeq.convert import ConvertConfig, convert

    keras.utils.set_random_seed(0)
    layers = [keras.Input((inputs,))] + [keras.layers.Dense(h, activation="relu") for h in hidden]
    model = keras.Sequential([*layers, keras.layers.Dense(10)])
    name = f"mlp_{inputs}_" + "_".join(map(str, hidden))
    model.save(root / f"{name}.keras")
    np.savez(root / f"{name}_calib.npz",
             x=np.random.default_rng(0).normal(size=(16, inputs)).astype(np.float32))
    out = root / name
    convert(ConvertConfig(root / f"{name}.keras", out, root / f"{name}_calib.npz",
                          show_progress=False))
    return out / "model.tflite"


def raw_publish_s(broker: Mosquitto, payload: Path) -> float:
    """mosquitto_pub of a file at QoS 1 until a mosquitto_sub has received it."""
    name = f"bench/raw/{uuid.uuid4().hex[:8]}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", name,
                            "-q", "1", "-C", "1", "-N"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)  # subscribed
    t0 = time.perf_counter()
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", name, "-q",
                    "1", "-f", str(payload)], check=True)
    sub.wait(60)
    return time.perf_counter() - t0


def bench_deploys(work: Path, models: dict[str, Path], repeat: int) -> dict:
    """Deploy figures on a default mosquitto and on one with set_tcp_nodelay true."""
    out = {}
    for label, conf in (("mosquitto_default", ""), ("set_tcp_nodelay_true", "set_tcp_nodelay true")):
        broker = Mosquitto(work / f"broker-{label}", extra_conf=conf).start()
        key, pub = generate_keys(work / f"keys-{label}")
        agent = AgentProcess(broker.url, "bench-dev", work / f"agent-{label}", pub).start()
        try:
            wait_online(broker)
            out[label] = {size: bench_deploy(broker, work, key, model, repeat)
                          for size, model in models.items()}
        finally:
            agent.stop()
            broker.stop()
    return out


def wait_online(broker: Mosquitto) -> None:
    with HostSession(Broker.from_url(broker.url)) as s:
        wait_until(lambda: s.require_online("bench-dev", 1.0), 30, "agent online")


def bench_deploy(broker: Mosquitto, work: Path, key: Path, model: Path, repeat: int) -> dict:
    cfg = DeployConfig(model, "bench-dev", Broker.from_url(broker.url), key, show_progress=False,
                       timeout_s=120)
    build_bundle(cfg, work / "bundle.zip")
    size = (work / "bundle.zip").stat().st_size
    edgeq_runs = [deploy(cfg) for _ in range(repeat)]
    raws = [raw_publish_s(broker, work / "bundle.zip") for _ in range(repeat)]
    raw = statistics.median(raws)
    transfers = [r["seconds"]["transfer"] for r in edgeq_runs]
    transfer = statistics.median(transfers)
    return {"bundle_bytes": size, "chunks": edgeq_runs[0]["bundle"]["chunks"],
            "edgeq_transfer_s": transfer,
            "edgeq_transfer_min_max_s": [min(transfers), max(transfers)],
            "raw_min_max_s": [round(min(raws), 4), round(max(raws), 4)],
            "edgeq_total_s": statistics.median(r["seconds"]["total"] for r in edgeq_runs),
            "edgeq_activate_s": statistics.median(r["seconds"]["activate"] for r in edgeq_runs),
            "raw_mosquitto_pub_s": round(raw, 4),
            "edgeq_mb_s": round(size / 1e6 / transfer, 1), "raw_mb_s": round(size / 1e6 / raw, 1),
            "ratio_raw_over_edgeq": round(raw / transfer, 3), "target": ">= 0.5", "repeat": repeat}


def fake_result(device: str) -> dict:
    return {"schema_version": 1, "report_id": uuid.uuid4().hex, "cmd_id": "bench",
            "type": "benchmark", "device": device, "ts": time.time(), "agent": {"version": "b"},
            "arch": "x86_64", "runtime": {"name": "litert", "version": "b"},
            "model": {"name": "m", "sha256": "ab" * 32},
            "latency": {"p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2, "samples_ms": [1.0] * 100},
            "power": None, "accuracy": None, "errors": []}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_collector(broker: Mosquitto, work: Path, n_agents: int, rate: float, seconds: float) -> dict:
    db = work / "collect.sqlite"
    collector = CollectorProcess(broker.url, db).start()
    wait_until(lambda: "subscribed" in collector.log(), 30, "collector subscribed")
    clients = []
    for k in range(n_agents):
        c = make_client(Broker.from_url(broker.url), f"sim-{k}")
        c.connect(broker.host, broker.port)
        c.loop_start()
        clients.append(c)
    cpu0, wall0 = cpu_seconds(collector.proc.pid), time.perf_counter()
    total, infos = int(rate * seconds), []
    for i in range(total):  # fixed aggregate rate, round-robin over the agents
        due = wall0 + i / rate
        if (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        device = f"sim-{i % n_agents}"
        infos.append(clients[i % n_agents].publish(topic(device, "result"),
                                                   encode(fake_result(device)), qos=1))
    published = time.perf_counter()
    for info in infos:
        info.wait_for_publish(30)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(stored_rows(db)) >= total, 120, "every result stored", 0.2)
    done = time.perf_counter()
    cpu = cpu_seconds(collector.proc.pid) - cpu0
    stored = len(stored_rows(db))
    for c in clients:
        c.disconnect()
        c.loop_stop()
    collector.stop()
    return {"agents": n_agents, "offered_rate_per_s": rate, "published": total,
            "stored": stored, "lost": total - stored, "loss_target": 0,
            "publish_s": round(published - wall0, 2), "all_stored_s": round(done - wall0, 2),
            "stored_per_s": round(stored / (done - wall0), 1),
            "collector_cpu_s": round(cpu, 2),
            "collector_cpu_share_of_one_core": round(cpu / (done - wall0), 3)}


def bare_p50_ms(model: bytes, runs: int) -> float:
    with LiteRTRuntime(model) as rt:
        sample = [np.zeros(s.shape, s.dtype) for s in rt.inputs()]
        rt.load_inputs(sample)
        for _ in range(50):
            rt.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            rt.interpreter.invoke()
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def bench_overhead(broker: Mosquitto, key: Path, model: Path, runs: int) -> dict:
    host = Broker.from_url(broker.url)
    deploy(DeployConfig(model, "bench-dev", host, key, show_progress=False, timeout_s=120))
    agent_p50, bare = [], [bare_p50_ms(model.read_bytes(), runs)]
    for _ in range(2):  # alternate, so drift of the machine hits both
        report = request_report(host, "bench-dev", "benchmark", 300, runs=runs, warmup=50,
                                power=False, evaluate=False)
        agent_p50.append(report["latency"]["p50_ms"])
        bare.append(bare_p50_ms(model.read_bytes(), runs))
    a, b = statistics.median(agent_p50), statistics.median(bare)
    return {"model_bytes": model.stat().st_size, "runs": runs, "agent_p50_ms": a,
            "bare_loop_p50_ms": round(b, 5), "ratio": round(a / b, 3), "target": "within 5%"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=400.0, help="results per second, in all")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=7, help="deploys per size (median)")
    parser.add_argument("--skip-large", action="store_true", help="no 10 MB model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeq-fleet-bench-") as tmp:
        work = Path(tmp)
        models = {"1MB": mlp_int8(work, 1024, (1000,))}
        if not args.skip_large:
            models["10MB"] = mlp_int8(work, 256, (3136, 3136))
        out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "deploy": bench_deploys(work, models, args.repeat)}
        broker = Mosquitto(work / "broker").start()
        key, pub = generate_keys(work / "keys")
        agent = AgentProcess(broker.url, "bench-dev", work / "agent", pub).start()
        try:
            wait_online(broker)
            out["agent_overhead"] = {
                "digits_attention_int8": bench_overhead(broker, key, _attention_int8(work), 2000),
                "mlp_1MB_int8": bench_overhead(broker, key, models["1MB"], 500)}
            agent.stop()
            out["collector"] = bench_collector(broker, work, args.agents, args.rate, args.seconds)
        finally:
            agent.stop()
            broker.stop()
    print(json.dumps(out, indent=2))


def _attention_int8(work: Path) -> Path:
    from edgeq.convert import ConvertConfig, convert

    examples = REPO / "examples"
    out = work / "attention"
    convert(ConvertConfig(examples / "digits_attention.keras", out,
                          examples / "digits_attention_calib.npz", show_progress=False))
    return out / "model.tflite"


if __name__ == "__main__":
    main()
