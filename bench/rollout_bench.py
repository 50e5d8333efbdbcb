"""Fleet rollouts at scale against a real mosquitto and a real PostgreSQL; prints JSON.

1000 simulated devices (tests/sim_fleet.py: each its own MQTT connection, the real protocol,
signed deploys checked, a fake runtime) in one group; `edgeq rollout` runs as its own process
(its CPU is the host's), the broker's CPU is read from /proc. Scenarios:

- full: a staged rollout (5% canary, waves x4, p95-latency gate) completes; every device ends
  on the new model exactly once.
- canary-failure: 10% of the canaries fail their load check -> halted before the next wave,
  every touched device back on its previous model (read from the retained statuses).
- latency-gate: the new model 2x slower on every device -> halted by the p95 gate.
- host-killed: the rollout process is killed (SIGKILL) mid-rollout and resumed: it finishes and
  no device is deployed twice.
- collectors: two `edgeq collect` sharing the subscription into one PostgreSQL store, results
  offered at 2000/s, one collector killed mid-stream and restarted: lost and duplicate rows.

    python bench/rollout_bench.py [--devices 1000] [--rate 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mqtt_env import CollectorProcess, Mosquitto, wait_until
from pg_env import Postgres
from sim_fleet import SimFleet

from device_agent.connection import Broker, make_client
from device_agent.protocol import encode, topic
from device_agent.signing import generate_keys, sha256_file
from edgeq.fleet.session import list_devices
from edgeq.fleet.store import open_store


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def model(work: Path) -> Path:
    """A real int8 model to roll out (the bundled digits CNN, converted here)."""
    from edgeq.convert import ConvertConfig, convert

    out = work / "digits_cnn"
    convert(ConvertConfig(REPO / "examples/digits_cnn.keras", out,
                          REPO / "examples/digits_cnn_calib.npz", show_progress=False))
    return out / "model.tflite"


def rollout_cmd(tflite: Path, broker: Mosquitto, key: Path, db: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeq.cli", "rollout", str(tflite), "--group", "fleet",
            "--broker", broker.url, "--key", str(key), "--db", db, "--canary", "5%",
            "--waves", "4", "--bench-runs", "5", "--json", *extra]


def run_host(cmd: list[str], broker: Mosquitto, kill_when=None) -> dict:
    """Run `edgeq rollout` as a process; its wall and CPU time, the broker's CPU, its report."""
    broker_cpu, host_cpu = cpu_seconds(broker.proc.pid), children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if kill_when is not None:
        wait_until(kill_when, 300, "the kill point")
        proc.kill()
    out, err = proc.communicate(timeout=900)
    wall = time.perf_counter() - start
    report = json.loads(out) if out.strip().startswith("{") else {"error": err[-500:]}
    return {"exit": proc.returncode, "wall_s": round(wall, 2),
            "host_cpu_s": round(children_cpu() - host_cpu, 2),
            "broker_cpu_s": round(cpu_seconds(broker.proc.pid) - broker_cpu, 2),
            "report": report}


def statuses_on(broker: Mosquitto, sha: str) -> int:
    found = list_devices(Broker.from_url(broker.url), settle_s=1.0)
    return sum((s.get("model") or {}).get("sha256") == sha for s in found)


def scenario(name: str, work: Path, args, key_pair, tflite: Path, **fleet_kw) -> dict:
    broker = Mosquitto(work / name / "broker", persistent=False).start()
    fleet = SimFleet(broker.host, broker.port, key_pair[1], args.devices, **fleet_kw)
    t0 = time.perf_counter()
    fleet.start(timeout=120)
    connect_s = time.perf_counter() - t0
    sha = sha256_file(tflite)
    db = str(work / name / "r.sqlite")
    try:
        if name == "canary-failure":
            canaries = sorted(fleet.devices)[:max(1, args.devices * 5 // 100)]
            for d in canaries[:max(1, len(canaries) // 10)]:
                fleet.devices[d].fail_load = True
        if name == "latency-gate":
            fleet.slow[sha] = 2.0
        gate = ["--gate", "p95-latency<=20%"]
        if name == "host-killed":
            first = run_host(rollout_cmd(tflite, broker, key_pair[0], db, *gate), broker,
                             kill_when=lambda: len(fleet.on_model(sha)) >= args.devices // 4)
            rollout_id = open_store(db).rollouts()[0]["id"]
            result = run_host([sys.executable, "-m", "edgeq.cli", "rollout", "resume", rollout_id,
                               "--broker", broker.url, "--key", str(key_pair[0]), "--db", db,
                               "--json"], broker)
            result["killed_after_s"] = first["wall_s"]
        else:
            result = run_host(rollout_cmd(tflite, broker, key_pair[0], db, *gate), broker)
        deploys = [len(d.deploys) for d in fleet.devices.values()]
        report = result.pop("report")
        result.update({"devices": args.devices, "connect_s": round(connect_s, 2),
                       "state": report.get("state"), "reason": report.get("reason"),
                       "counts": report.get("counts"),
                       "waves": report.get("waves", []),
                       "on_new_model_by_status": statuses_on(broker, sha),
                       "deployed_twice": sum(n > 1 for n in deploys),
                       "protocol_messages_at_devices": fleet.messages})
        return result
    finally:
        fleet.stop()
        broker.stop()


def collectors_scenario(work: Path, args) -> dict:
    """Two collectors, one PostgreSQL store, results offered at `rate`/s, one collector killed
    at a third of the stream and restarted (its broker session keeps its share)."""
    broker = Mosquitto(work / "collect" / "broker").start()
    pg = Postgres().start()
    try:
        collectors = [CollectorProcess(broker.url, pg.url, ("--client-id", f"c{k}"), f"c{k}",
                                       log_dir=work / "collect").start() for k in (1, 2)]
        for c in collectors:
            wait_until(lambda c=c: "subscribed" in c.log(), 30, "collector subscribed")
        total = args.rate * args.seconds
        client = make_client(Broker.from_url(broker.url), f"offer-{uuid.uuid4().hex[:6]}")
        client.max_inflight_messages_set(1000)
        client.connect(broker.host, broker.port)
        client.loop_start()
        infos, start = [], time.perf_counter()
        for k in range(total):
            r = {"schema_version": 1, "report_id": uuid.uuid4().hex, "cmd_id": "b1",
                 "type": "benchmark", "device": f"dev{k % 200}", "ts": time.time(), "agent": {},
                 "arch": "sim", "runtime": {"name": "sim"}, "model": {"sha256": "ab" * 32},
                 "latency": {"p50_ms": 1.0}, "power": None, "accuracy": None, "errors": []}
            infos.append(client.publish(topic(r["device"], "result"), encode(r), qos=1))
            if k == total // 3:
                collectors[0].kill()
                killed_at = k
            ahead = start + (k + 1) / args.rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        offered_s = time.perf_counter() - start
        for info in infos:
            info.wait_for_publish(60)
        client.disconnect()
        client.loop_stop()
        restarted = CollectorProcess(broker.url, pg.url, ("--client-id", "c1"), "c1-again",
                                     log_dir=work / "collect").start()
        store = open_store(pg.url)
        try:
            t0 = time.perf_counter()
            with contextlib.suppress(AssertionError):  # what is missing is reported as lost
                wait_until(lambda: store.count() >= total, 120, "every result stored")
            drained_s = time.perf_counter() - t0
            ids = [r["report_id"] for r in store.results()]
        finally:
            store.close()
        for c in (collectors[1], restarted):
            c.stop()
        return {"offered": total, "offered_per_s": round(total / offered_s),
                "collector_killed_after": killed_at, "stored": len(ids),
                "lost": total - len(set(ids)), "duplicates": len(ids) - len(set(ids)),
                "drain_after_offer_s": round(drained_s, 2)}
    finally:
        pg.stop()
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--seconds", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeq-rollout-bench-") as tmp:
        work = Path(tmp)
        keys = generate_keys(work / "keys")
        tflite = model(work)
        out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "scenarios": {}}
        for name in ("full", "canary-failure", "latency-gate", "host-killed"):
            out["scenarios"][name] = scenario(name, work, args, keys, tflite)
        out["scenarios"]["collectors"] = collectors_scenario(work, args)
        s = out["scenarios"]
        n = args.devices
        out["targets"] = {
            "full_rollout_completes_exactly_once": s["full"]["state"] == "done"
            and s["full"]["on_new_model_by_status"] == n and s["full"]["deployed_twice"] == 0,
            "canary_failure_halts_and_rolls_back": s["canary-failure"]["state"] == "halted"
            and len(s["canary-failure"]["waves"]) == 1
            and s["canary-failure"]["on_new_model_by_status"] == 0,
            "latency_gate_halts": s["latency-gate"]["state"] == "halted"
            and "p95" in (s["latency-gate"]["reason"] or "")
            and s["latency-gate"]["on_new_model_by_status"] == 0,
            "collectors_lose_nothing": s["collectors"]["lost"] == 0
            and s["collectors"]["duplicates"] == 0,
            "host_killed_resumes_without_double_deploy": s["host-killed"]["state"] == "done"
            and s["host-killed"]["deployed_twice"] == 0
            and s["host-killed"]["on_new_model_by_status"] == n}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
