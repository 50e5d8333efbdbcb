"""The device agent: receives signed models over MQTT, benchmarks and evaluates them, and
reports latency, power and accuracy back. Protocol: device_agent.protocol.

Threads: paho's network thread only enqueues (connects, messages, acknowledgements); the main
thread does all the work in order, so a long benchmark never races a deploy.
The agent dispatches; its parts do the work behind the small `AgentContext` it gives them:
`Receiver` (deploy/rollback state machine: any failure leaves the active model untouched),
`Measurement` (benchmark/evaluate -> a result, never a lost report) and `Outbox` (a result is on
disk before it is published and deleted only when a collector acknowledges storing it).
A malformed command gets an error event and the agent carries on.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import __version__
from .adb import Phone, PhoneBatteryProbe, PhoneRuntime, PhoneTarget
from .authority import Authority
from .bundle import MODEL
from .connection import Arrival, Broker, Inbox, Kind, make_client, properties
from .loadcheck import check_in_child
from .measurement import Measurement
from .outbox import Outbox, correlation
from .power import PowerProbe, detect_probe
from .protocol import (
    Command,
    ProtocolError,
    chunk_filter,
    encode,
    event_message,
    parse_chunk_topic,
    parse_command,
    resend_topic,
    status_message,
    topic,
)
from .receiver import Receiver, ReceiverLimits, model_info
from .runtimes import Runtime, open_runtime, resolve_runtime
from .signing import load_public_key
from .spool import Spool
from .store import ModelStore

log = logging.getLogger("edgeq.agent")


@dataclass(frozen=True)
class AgentConfig:
    """Everything `edgeq-agent` needs; see `edgeq-agent --help`."""

    broker: Broker
    device_id: str
    data_dir: Path
    trust_key: Path
    runtime: str = "auto"
    power: str = "auto"
    max_bundle_bytes: int = 256 * 2**20
    spool_limit: int = 1000
    transfer_timeout_s: float = 120.0  # no chunk for this long: abort
    transfer_deadline_s: float = 1800.0  # a whole transfer, however it trickles
    session_expiry_s: int = 600
    resend_after_s: float = 60.0
    child_python: tuple[str, ...] = ()  # how to start child interpreters; () = this one
    phone: PhoneTarget | None = None  # bridge mode: this agent is a phone reached over adb
    groups: tuple[str, ...] = ()  # fleets this device is in (`edgeq rollout --group`)
    tags: tuple[tuple[str, str], ...] = ()  # k=v labels (`edgeq devices --tag`)


class Agent:
    """One device's agent. `run(stop)` blocks until `stop` is set."""

    def __init__(self, cfg: AgentConfig,
                 probe_registry: dict[str, Callable[..., PowerProbe]] | None = None) -> None:
        self.cfg = cfg
        self.device = cfg.device_id
        self.store = ModelStore(cfg.data_dir)
        self.spool = Spool(cfg.data_dir / "spool", cfg.spool_limit)
        self.trusted = load_public_key(cfg.trust_key)
        self.phone = Phone(cfg.phone) if cfg.phone is not None else None
        if self.phone is not None:  # a phone bridged over adb: its tool, its battery
            self.runtime_name = "adb"
            target = self.phone.target
            self.runtime_version = f"{target.benchmark_binary.name} ({target.delegate})"
            probe_registry = {"adb-battery": partial(PhoneBatteryProbe, self.phone.adb)}
        else:
            self.runtime_name, self.runtime_version = resolve_runtime(cfg.runtime)
        self.probe, self.power_reason = detect_probe(
            "adb-battery" if self.phone and cfg.power == "auto" else cfg.power, probe_registry)
        self.authority = Authority(cfg.data_dir, self.trusted, self.device)
        self.inbox = Inbox()
        self.busy: dict[str, Any] | None = None  # the command running now (in the status)
        self.stopping = threading.Event()
        self.client = self._make_client()
        self.outbox = Outbox(self.client, self.device, self.spool, cfg.resend_after_s)
        self.receiver = Receiver(self, self.authority, ReceiverLimits(
            cfg.data_dir, cfg.max_bundle_bytes, cfg.transfer_timeout_s, cfg.transfer_deadline_s))
        self.measurement = Measurement(self, self.outbox, self.probe, self.power_reason,
                                       self.runtime_version, self.stopping)

    # -- connection ------------------------------------------------------------------------

    def _make_client(self) -> Any:
        client = make_client(self.cfg.broker, f"edgeq-agent-{self.device}")
        # The will is fixed at connect time: it says only what stays true (no time, no model).
        lost = {"schema_version": 1, "device": self.device, "state": "offline",
                "reason": "connection lost (last will)", "groups": list(self.cfg.groups),
                "tags": dict(self.cfg.tags)}  # an offline device still counts in its group
        client.will_set(topic(self.device, "status"), encode(lost), qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        self.inbox.attach(client)
        return client

    def run(self, stop: threading.Event) -> None:
        """Connect (retrying with backoff) and serve until `stop` is set."""
        self.client.connect_async(self.cfg.broker.host, self.cfg.broker.port,
                                  self.cfg.broker.keepalive, clean_start=False,
                                  properties=properties("CONNECT",
                                                        SessionExpiryInterval=self.cfg.session_expiry_s))
        self.client.loop_start()
        log.info("agent %s: runtime %s %s, power %s, broker %s", self.device, self.runtime_name,
                 self.runtime_version, self.probe.name if self.probe else "none",
                 self.cfg.broker.url)
        self.stopping = self.measurement.stopping = stop
        next_tick = 0.0
        try:
            while not stop.is_set():
                arrival = self.inbox.get(timeout=0.5)
                if arrival is not None:
                    self._dispatch_safely(arrival)
                if time.monotonic() >= next_tick:  # timers, even while messages keep coming
                    next_tick = time.monotonic() + 0.5
                    self._dispatch_safely(None)
        finally:
            self._shutdown()

    def _dispatch_safely(self, arrival: Arrival | None) -> None:
        """Handle an arrival (None: the timers' turn). Whatever arrives, the agent carries on:
        an unexpected error is logged and answered with an error event."""
        try:
            if arrival is None:
                self.receiver.check_timeout()
                self.outbox.resend_overdue()
            else:
                self._dispatch(arrival)
        except Exception as e:
            log.exception("unexpected error handling %s %s", getattr(arrival, "kind", "timers"),
                          getattr(arrival, "topic", "")[:200])
            with contextlib.suppress(Exception):
                self.event(None, "error", None, f"internal error: {type(e).__name__}: "
                                                 f"{str(e)[:300]}")

    def _shutdown(self) -> None:
        info = self.client.publish(topic(self.device, "status"),
                                   encode(self.status("offline", reason="agent stopped")),
                                   qos=1, retain=True)
        if info.rc == 0:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.receiver.close()

    def _dispatch(self, a: Arrival) -> None:
        if a.kind is Kind.CONNECTED:
            self._on_connected(a.reason)
        elif a.kind is Kind.DISCONNECTED:
            log.warning("disconnected from %s (%s); reconnecting", self.cfg.broker.url, a.reason)
        elif a.kind is Kind.PUBLISHED:
            self.outbox.on_published(a.mid, a.reason)
        elif a.kind is Kind.SUBSCRIBED:
            self._on_subscribed(a.reason)
        elif a.kind is Kind.MESSAGE:
            self._on_message(a.topic, a.payload)

    def _on_connected(self, reason: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.cfg.broker.url, reason)
            return
        log.info("connected to %s", self.cfg.broker.url)
        self.client.subscribe([(topic(self.device, "cmd"), 1), (topic(self.device, "ack"), 1),
                               (resend_topic(), 1), (chunk_filter(self.device), 1)])
        self.publish_status()

    def _on_subscribed(self, reasons: list[Any]) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused a subscription (%s): check this device's ACL",
                      ", ".join(refused))
        # Only now can acks reach us: resend everything unacknowledged, including what paho
        # re-sent at reconnect before we were listening (a duplicate is ignored by collectors).
        self.outbox.resend(include_held=True)

    def publish_status(self) -> None:
        """Publish the retained status (model, busy command, spool) now."""
        self.client.publish(topic(self.device, "status"), encode(self.status("online")), qos=1,
                            retain=True)

    def set_busy(self, cmd: Command | None) -> None:
        """Say in the retained status which command runs now (None: idle)."""
        self.busy = None if cmd is None else {"cmd_id": cmd.id, "type": cmd.type,
                                              "since": round(time.time(), 3)}
        self.publish_status()

    def status(self, state: str, **extra: Any) -> dict[str, Any]:
        """This device's status message: what runs, which model, its key and spool."""
        active = self.store.active()
        return status_message(
            self.device, state, **extra,
            agent={"version": __version__, "python": platform.python_version()},
            arch=platform.machine(), platform=platform.platform(),
            runtime={"name": self.runtime_name, "version": self.runtime_version},
            model=model_info(active), previous=model_info(self.store.previous()),
            busy=self.busy, key_id=self.authority.key_id, seq=self.authority.seq,
            groups=list(self.cfg.groups), tags=dict(self.cfg.tags),
            phone=({**self.phone.props, "serial": self.phone.target.serial, "bridge": "adb"}
                   if self.phone else None),
            power={"source": self.probe.name if self.probe else None,
                   "reason": self.power_reason or None},
            spool={"pending": len(self.spool), "dropped": self.spool.dropped,
                   "rejected": self.spool.rejected})

    # -- messages --------------------------------------------------------------------------

    def _on_message(self, name: str, payload: bytes) -> None:
        chunk = parse_chunk_topic(name)
        if chunk is not None:
            self.receiver.on_chunk(chunk[0], chunk[1], payload)
        elif name == topic(self.device, "cmd"):
            self._on_command(payload)
        elif name == topic(self.device, "ack"):
            self.outbox.on_ack(payload)
        elif name == resend_topic():
            self.outbox.on_resend_request()

    def _on_command(self, payload: bytes) -> None:
        try:
            cmd = parse_command(payload)
        except ProtocolError as e:
            log.warning("refused command: %s", e)
            self.event(e.cmd_id, "error", "rejected", str(e))
            return
        if self.authority.taken(cmd.id):  # a redelivery (also across restarts): already ran
            log.info("command %s: already taken, ignoring the repeat", cmd.id)
            return
        self.authority.take(cmd.id)
        expires = cmd.args.get("expires") or 0.0
        if expires and expires < time.time():
            log.warning("command %s (%s) expired %.0f s ago; dropped", cmd.id, cmd.type,
                        time.time() - expires)
            self.event(cmd.id, "error", "rejected", f"expired {time.time() - expires:.0f} s "
                        "before the device could take it (it was busy); nothing was done")
            return
        log.info("command %s: %s", cmd.id, cmd.type)
        handlers: dict[str, Callable[[Command], None]] = {
            "ping": self._ping, "deploy": self.receiver.deploy, "rollback": self.receiver.rollback,
            "benchmark": self.measurement.run, "evaluate": self.measurement.run}
        try:
            handlers[cmd.type](cmd)
        except Exception as e:
            log.exception("command %s failed", cmd.id)
            self.event(cmd.id, "error", "failed", f"{type(e).__name__}: {e}")

    def event(self, cmd_id: str | None, level: str, state: str | None, message: str,
              **details: Any) -> None:
        """Publish an event about a command (or the agent, when `cmd_id` is None)."""
        event = event_message(self.device, cmd_id, level, state, message, **details)
        self.client.publish(topic(self.device, "event"), encode(event), qos=1,
                            properties=correlation(cmd_id))

    def open_runtime(self, model: bytes, threads: int) -> Runtime:
        """The model in this agent's runtime (on a bridged phone: run there)."""
        if self.phone is not None:
            return PhoneRuntime(self.phone, model, threads)
        return open_runtime(self.runtime_name, model, num_threads=threads)

    def check_model(self, bundle_dir: Path) -> str | None:
        """None when the model loads and invokes (a child process; a phone: on the phone)."""
        if self.phone is not None:
            return self.phone.check((bundle_dir / MODEL).read_bytes())
        check = check_in_child(bundle_dir, self.runtime_name, python=self.cfg.child_python)
        return None if check.ok else check.error

    def _ping(self, cmd: Command) -> None:
        self.event(cmd.id, "info", "pong", "pong", status=self.status("online"))

