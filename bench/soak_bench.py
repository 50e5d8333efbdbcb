"""Soak: N real agents (device_agent.Agent, in this process, each with its own MQTT client and
data dir) under a stream of random malformed messages for S seconds, while simulated devices
publish valid results to a real `edgeq collect` process on a real mosquitto. Prints JSON.

Malformed messages go to every agent topic (cmd, ack, deploy chunks, the resend broadcast) and
to the result topic the collector reads: deep nesting, NaN, huge numbers, wrong types, random
bytes, oversize payloads, replayed and unsigned commands. At the end every agent must answer a
ping (0 crashes) and every valid result must be stored exactly once (0 lost).

    python bench/soak_bench.py [--agents 200] [--seconds 60] [--rate 100] [--malformed-rate 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mqtt_env import CollectorProcess, Mosquitto, stored_rows, wait_until

from device_agent.agent import Agent, AgentConfig
from device_agent.connection import Broker, make_client
from device_agent.protocol import encode, resend_topic, topic
from device_agent.signing import generate_keys

RESULT = {"schema_version": 1, "cmd_id": "b1", "type": "benchmark", "agent": {},
          "arch": "x86_64", "runtime": {"name": "sim"}, "model": {"sha256": "f" * 64},
          "latency": {"p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5}, "power": None,
          "accuracy": None, "errors": []}


def malformed(rng: random.Random) -> bytes:
    """One hostile payload, drawn from the kinds the adversarial run found."""
    kind = rng.randrange(9)
    if kind == 0:
        return b"[" * rng.randint(20, 30000) + b"]" * 5
    if kind == 1:
        return b'{"id":"x","type":"benchmark","min_seconds":NaN}'
    if kind == 2:
        return b'{"id":"y","type":"benchmark","runs":' + b"9" * rng.randint(20, 500) + b"}"
    if kind == 3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    if kind == 4:
        return encode({"id": f"r{rng.randrange(10**6)}", "type": "rollback"})
    if kind == 5:
        return encode({"report_ids": [{"$x": 1}] * rng.randint(1, 50)})
    if kind == 6:
        return encode({**RESULT, "report_id": uuid.uuid4().hex, "device": "soak-0",
                       "ts": time.time(), "accuracy": {"task": [1, 2, 3]}})
    if kind == 7:
        return encode({"id": f"d{rng.randrange(10**6)}", "type": "deploy",
                       "manifest": {"size": -1, "chunks": "x"}})
    return b"x" * rng.randint(65_000, 200_000)


def hostile_topic(rng: random.Random, devices: list[str]) -> str:
    device = rng.choice(devices)
    return rng.choice([topic(device, "cmd"), topic(device, "ack"), resend_topic(),
                       f"edgeq/v1/{device}/deploy/x/{rng.choice(['0', '²', '9' * 50])}",
                       topic(device, "result")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=100.0, help="valid results per second")
    parser.add_argument("--malformed-rate", type=float, default=200.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgeq-soak-"))
    broker = Mosquitto(root / "broker").start()
    collector = CollectorProcess(broker.url, root / "r.sqlite").start()
    _, public = generate_keys(root / "keys")
    devices = [f"soak-{k}" for k in range(args.agents)]
    stop = threading.Event()
    _agents, threads = start_agents(devices, broker, root, public, stop)
    wait_until(lambda: root.joinpath("r.sqlite").exists(), 30, "the collector")
    time.sleep(2.0)
    started = time.monotonic()
    counts = {"malformed_sent": 0}
    sent_ids: list[str] = []
    load = [threading.Thread(target=hostile_stream, args=(broker, devices, args, counts)),
            threading.Thread(target=valid_stream, args=(broker, args, sent_ids))]
    for t in load:
        t.start()
    for t in load:
        t.join()
    soak_s = time.monotonic() - started
    stored = wait_until(lambda: (rows := {r for r, _ in stored_rows(collector.db)})
                        >= set(sent_ids) and rows, 60, "every valid result stored")
    answered = ping_all(broker, devices)
    alive = sum(t.is_alive() for t in threads)
    stop.set()
    collector_alive = collector.proc.poll() is None
    for t in threads:
        t.join(10)
    collector.stop()
    broker.stop()
    print(json.dumps({
        "agents": args.agents, "seconds": round(soak_s, 1),
        "malformed_sent": counts["malformed_sent"],
        "valid_results_sent": len(sent_ids), "valid_results_stored": len(set(sent_ids) & stored),
        "results_lost": len(set(sent_ids) - stored),
        "agents_answering_ping_after": answered, "agent_threads_alive_after": alive,
        "agent_crashes": args.agents - min(answered, alive), "collector_alive": collector_alive,
    }, indent=2))


def start_agents(devices: list[str], broker: Mosquitto, root: Path, public: Path,
                 stop: threading.Event) -> tuple[list[Agent], list[threading.Thread]]:
    import logging

    logging.getLogger("edgeq.agent").setLevel(logging.CRITICAL)  # the flood is the point
    agents, threads = [], []
    for device in devices:
        cfg = AgentConfig(Broker.from_url(broker.url), device, root / "agents" / device, public,
                          power="none", resend_after_s=3600)
        (root / "agents" / device).mkdir(parents=True)
        agent = Agent(cfg)
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        agents.append(agent)
        threads.append(thread)
    return agents, threads


def hostile_stream(broker: Mosquitto, devices: list[str], args: argparse.Namespace,
                   counts: dict[str, int]) -> None:
    rng = random.Random(7)
    client = _client(broker, "soak-hostile")
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        client.publish(hostile_topic(rng, devices), malformed(rng), qos=rng.choice([0, 1]))
        counts["malformed_sent"] += 1
        time.sleep(1.0 / args.malformed_rate)
    client.loop_stop()
    client.disconnect()


def valid_stream(broker: Mosquitto, args: argparse.Namespace, sent: list[str]) -> None:
    client = _client(broker, "soak-valid")
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        report_id = uuid.uuid4().hex
        device = f"sim-{len(sent) % 50}"
        client.publish(topic(device, "result"), encode({**RESULT, "report_id": report_id,
                                                        "device": device, "ts": time.time()}),
                       qos=1).wait_for_publish(10)
        sent.append(report_id)
        time.sleep(1.0 / args.rate)
    client.loop_stop()
    client.disconnect()


def ping_all(broker: Mosquitto, devices: list[str]) -> int:
    client = _client(broker, "soak-ping")
    pongs: set[str] = set()
    client.on_message = lambda c, u, m: pongs.add(json.loads(m.payload).get("cmd_id") or "")
    client.subscribe("edgeq/v1/+/event", qos=1)
    time.sleep(0.5)
    ids = {}
    for device in devices:
        cmd_id = f"ping-{uuid.uuid4().hex[:10]}"
        ids[cmd_id] = device
        client.publish(topic(device, "cmd"), encode({"id": cmd_id, "type": "ping"}), qos=1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(ids) <= pongs:
        time.sleep(0.2)
    client.loop_stop()
    client.disconnect()
    return len(set(ids) & pongs)


def _client(broker: Mosquitto, name: str):
    client = make_client(Broker.from_url(broker.url), f"{name}-{os.getpid()}")
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


if __name__ == "__main__":
    main()
