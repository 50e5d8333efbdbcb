"""A simulated fleet: many lightweight in-process devices, each its own MQTT connection (with its
last will) to the real broker, speaking protocol v1 exactly as the agent does: retained status
with groups and tags, signed deploys checked against the host key, chunks checked against the
manifest's sha256, rollbacks, benchmark results. Only the runtime is fake: a load check that
fails on request and a latency from a per-device base times a per-model factor.

All connections are driven by one thread (paho's external loop over a selector), so a thousand
devices cost one thread. Used by tests/test_rollout.py and bench/rollout_bench.py."""

from __future__ import annotations

import hashlib
import random
import selectors
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from device_agent.protocol import (
    ProtocolError,
    chunk_filter,
    decode,
    encode,
    event_message,
    parse_chunk_topic,
    parse_command,
    signed_part,
    status_message,
    topic,
)
from device_agent.signing import SignatureError, load_public_key, verify_statement


@dataclass
class SimDevice:
    """One simulated device: what it runs, what it had before, how it behaves."""

    name: str
    groups: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    base_latency_ms: float = 5.0
    fail_load: bool = False  # its load check of any new model fails
    model: dict[str, Any] | None = None  # {name, sha256, bytes, bundle}
    previous: dict[str, Any] | None = None
    deploys: list[str] = field(default_factory=list)  # model sha256 of every activation
    seq: int = 0
    client: Any = None
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)


class SimFleet:
    """`count` devices named PREFIX-0000... in `group`, all on the model `initial` at start."""

    def __init__(self, broker_host: str, broker_port: int, trust_key: Path, count: int,
                 group: str = "fleet", prefix: str = "sim", initial: dict[str, Any] | None = None,
                 slow: dict[str, float] | None = None, seed: int = 0) -> None:
        self.host, self.port = broker_host, broker_port
        self.trusted_path, self.trusted = trust_key, load_public_key(trust_key)
        self.slow = slow if slow is not None else {}  # model sha256 -> latency factor
        rng = random.Random(seed)
        initial = initial or {"name": "old", "sha256": "0" * 64, "bytes": 1, "bundle": "0" * 64}
        self.devices = {f"{prefix}-{k:04d}": SimDevice(f"{prefix}-{k:04d}", [group],
                                                       {"site": f"s{k % 4}"},
                                                       base_latency_ms=rng.uniform(4.0, 6.0),
                                                       model=dict(initial))
                        for k in range(count)}
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.messages = 0

    # -- connections ---------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> SimFleet:
        for d in self.devices.values():
            self._connect(d)
        self.thread = threading.Thread(target=self._loop, name="sim-fleet", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while any(not d.client.is_connected() for d in self.devices.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("simulated devices did not all connect")
            time.sleep(0.05)
        return self

    def _connect(self, d: SimDevice) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{d.name}",
                        protocol=mqtt.MQTTv5)
        c.will_set(topic(d.name, "status"), encode({"schema_version": 1, "device": d.name,
                                                    "state": "offline",
                                                    "reason": "connection lost (last will)",
                                                    "groups": d.groups, "tags": d.tags}),
                   qos=1, retain=True)
        c.on_connect = lambda client, _u, _f, _r, _p, d=d: self._on_connect(d)
        c.on_message = lambda client, _u, msg, d=d: self._on_message(d, msg.topic, msg.payload)
        c.connect(self.host, self.port, keepalive=60)
        d.client = c
        self.selector.register(c.socket(), selectors.EVENT_READ, d)

    def _loop(self) -> None:
        last_misc = 0.0
        while not self.stopping.is_set():
            with self.lock:
                for d in self.devices.values():
                    if d.client is not None and d.client.want_write():
                        d.client.loop_write()
            for key, _ in self.selector.select(timeout=0.01):
                with self.lock:
                    key.data.client.loop_read()
            if time.monotonic() - last_misc > 1.0:
                last_misc = time.monotonic()
                with self.lock:
                    for d in self.devices.values():
                        if d.client is not None:
                            d.client.loop_misc()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread:
            self.thread.join(timeout=10)
        for d in self.devices.values():
            self.disconnect(d.name, graceful=True)

    def disconnect(self, name: str, graceful: bool = False) -> None:
        """Take a device off the network: gracefully (offline status) or as a crash (its last
        will says offline)."""
        with self.lock:
            d = self.devices[name]
            if d.client is None:
                return
            c, d.client = d.client, None
            self.selector.unregister(c.socket())
            if graceful:
                c.disconnect()
                c.loop_write()
            else:
                c.socket().close()

    def reconnect(self, name: str) -> None:
        with self.lock:
            self._connect(self.devices[name])

    # -- protocol ------------------------------------------------------------------------

    def _publish(self, d: SimDevice, leaf: str, message: dict[str, Any], retain: bool = False) -> None:
        d.client.publish(topic(d.name, leaf), encode(message), qos=1, retain=retain)

    def _status(self, d: SimDevice) -> None:
        self._publish(d, "status", status_message(
            d.name, "online", agent={"version": "sim"}, arch="sim", runtime={"name": "sim",
                                                                             "version": "1"},
            model=d.model, previous=d.previous, busy=None, groups=d.groups, tags=d.tags,
            seq=d.seq), retain=True)

    def _event(self, d: SimDevice, cmd_id: str, level: str, state: str, message: str,
               **details: Any) -> None:
        self._publish(d, "event", event_message(d.name, cmd_id, level, state, message, **details))

    def _on_connect(self, d: SimDevice) -> None:
        d.client.subscribe([(topic(d.name, "cmd"), 1), (chunk_filter(d.name), 1)])
        self._status(d)

    def _on_message(self, d: SimDevice, name: str, payload: bytes) -> None:
        self.messages += 1
        chunk = parse_chunk_topic(name)
        if chunk is not None:
            self._on_chunk(d, chunk[0], chunk[1], payload)
            return
        try:
            cmd = parse_command(payload)
        except ProtocolError as e:
            self._event(d, e.cmd_id or "unknown", "error", "rejected", str(e))
            return
        handler = {"deploy": self._deploy, "rollback": self._rollback,
                   "benchmark": self._benchmark}.get(cmd.type)
        if handler is None:
            self._event(d, cmd.id, "info", "pong", "pong")
            return
        handler(d, cmd.id, cmd.args)

    def _authorized(self, d: SimDevice, statement: dict[str, Any], kind: str) -> str | None:
        try:
            verify_statement(self.trusted, statement)
        except SignatureError as e:
            return str(e)
        if statement["kind"] != kind or statement["target"] != d.name:
            return f"signed for {statement['kind']} on {statement['target']}, not {kind} on {d.name}"
        if statement["seq"] <= d.seq:
            return f"sequence {statement['seq']} is not newer than {d.seq} (a replay)"
        if statement["expires"] < time.time():
            return "the signed statement has expired"
        d.seq = statement["seq"]
        return None

    def _deploy(self, d: SimDevice, cmd_id: str, args: dict[str, Any]) -> None:
        manifest = args["manifest"]
        why = self._authorized(d, signed_part(manifest), "deploy")
        if why:
            self._event(d, cmd_id, "error", "rejected", why)
            return
        d.transfers = {cmd_id: {"manifest": manifest, "chunks": {}}}  # a newer one pre-empts
        self._event(d, cmd_id, "info", "ready", f"send {manifest['chunks']} chunks")

    def _on_chunk(self, d: SimDevice, deploy_id: str, index: int, payload: bytes) -> None:
        t = d.transfers.get(deploy_id)
        if t is None or index >= t["manifest"]["chunks"]:
            return
        t["chunks"][index] = bytes(payload)
        if len(t["chunks"]) < t["manifest"]["chunks"]:
            return
        del d.transfers[deploy_id]
        data = b"".join(t["chunks"][k] for k in range(t["manifest"]["chunks"]))
        m = t["manifest"]
        if hashlib.sha256(data).hexdigest() != m["sha256"]:
            self._event(d, deploy_id, "error", "rejected", "bundle sha256 differs from the manifest's")
            return
        self._event(d, deploy_id, "info", "received", f"{len(data)} bytes")
        if d.fail_load:
            self._event(d, deploy_id, "error", "rejected",
                        "model does not load and invoke in sim: simulated load failure")
            return
        d.previous, d.model = d.model, {"name": m["name"], "sha256": m["model_sha256"],
                                        "bytes": len(data), "bundle": m["sha256"]}
        d.deploys.append(m["model_sha256"])
        self._status(d)
        self._event(d, deploy_id, "info", "activated", f"activated {m['name']}", model=d.model)

    def _rollback(self, d: SimDevice, cmd_id: str, args: dict[str, Any]) -> None:
        statement = args["authorization"]
        why = self._authorized(d, statement, "rollback")
        if why is None and (d.previous is None or statement["to"] != d.previous["bundle"]):
            why = "the signed rollback does not name the kept previous model"
        if why:
            self._event(d, cmd_id, "error", "rejected", why)
            return
        d.model, d.previous = d.previous, d.model
        self._status(d)
        self._event(d, cmd_id, "info", "activated", "rolled back", model=d.model)

    def _benchmark(self, d: SimDevice, cmd_id: str, args: dict[str, Any]) -> None:
        sha = (d.model or {}).get("sha256", "0" * 64)
        p50 = d.base_latency_ms * self.slow.get(sha, 1.0)
        result = {"schema_version": 1, "report_id": uuid.uuid4().hex, "cmd_id": cmd_id,
                  "type": "benchmark", "device": d.name, "ts": time.time(),
                  "agent": {"version": "sim"}, "arch": "sim",
                  "runtime": {"name": "sim", "version": "1", "threads": 1},
                  "model": d.model, "latency": {"runs": args["runs"], "p50_ms": p50,
                                                "p90_ms": p50 * 1.1, "p95_ms": p50 * 1.15,
                                                "p99_ms": p50 * 1.3},
                  "power": None, "accuracy": None, "errors": []}
        self._publish(d, "result", result)
        self._event(d, cmd_id, "info", "done", f"benchmark report {result['report_id']}",
                    report_id=result["report_id"])

    # -- what tests read -----------------------------------------------------------------

    def on_model(self, sha: str) -> list[str]:
        return [d.name for d in self.devices.values() if (d.model or {}).get("sha256") == sha]


def decode_status(payload: bytes) -> dict[str, Any]:
    return decode(payload, "status")
