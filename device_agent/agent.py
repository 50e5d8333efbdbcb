"""The device agent: receives signed models over MQTT, benchmarks and evaluates them, and
reports latency, power and accuracy back. Protocol: device_agent.protocol.

Threads: paho's network thread only enqueues (connects, messages, acknowledgements); the main
thread does all the work in order, so a long benchmark never races a deploy.
Guarantees: a deploy is checked (size, signature, sha256, load-and-invoke in a child process)
before an atomic switch, and any failure leaves the active model untouched; a result is on disk
before it is published and deleted only when a collector acknowledges storing it (resent after
reconnects and every `resend_after_s` until then); a malformed command gets an error event and
the agent carries on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import __version__
from .authority import Authority, NotAuthorized
from .benchmark import BenchmarkConfig, Interrupted, benchmark, random_inputs
from .bundle import Bundle, BundleError, extract_bundle
from .connection import Arrival, Broker, Inbox, Kind, make_client, properties
from .errors import AgentError
from .evaluate import evaluate, raw_samples
from .loadcheck import check_in_child
from .power import PowerProbe, detect_probe, measure_power, unavailable_power
from .protocol import (
    Command,
    ProtocolError,
    check_result,
    chunk_filter,
    encode,
    event_message,
    finite_or_null,
    parse_ack,
    parse_chunk_topic,
    parse_command,
    resend_topic,
    signed_part,
    status_message,
    topic,
)
from .runtimes import Runtime, open_runtime, resolve_runtime
from .signing import load_public_key, sha256_file
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


@dataclass
class Transfer:
    """A deploy whose chunks are arriving."""

    cmd_id: str
    manifest: dict[str, Any]
    path: Path
    file: BinaryIO
    received: set[int] = field(default_factory=set)
    last_activity: float = field(default_factory=time.monotonic)
    deadline: float = float("inf")  # time.monotonic() by which every chunk must be in


class Rejected(AgentError):
    """A deploy is refused; the message says why (the active model is unchanged)."""


class Agent:
    """One device's agent. `run(stop)` blocks until `stop` is set."""

    def __init__(self, cfg: AgentConfig,
                 probe_registry: dict[str, Callable[..., PowerProbe]] | None = None) -> None:
        self.cfg = cfg
        self.device = cfg.device_id
        self.store = ModelStore(cfg.data_dir)
        self.spool = Spool(cfg.data_dir / "spool", cfg.spool_limit)
        self.trusted = load_public_key(cfg.trust_key)
        self.runtime_name, self.runtime_version = resolve_runtime(cfg.runtime)
        self.probe, self.power_reason = detect_probe(cfg.power, probe_registry)
        self.authority = Authority(cfg.data_dir, self.trusted, self.device)
        self.inbox = Inbox()
        self.inflight: dict[int, str] = {}  # paho message id -> spooled report_id
        self.last_sent: dict[str, float] = {}  # report_id -> when it was last published
        self.transfer: Transfer | None = None
        self.busy: dict[str, Any] | None = None  # the command running now (in the status)
        self.last_resend_request = -1e9
        self.stopping = threading.Event()
        self.client = self._make_client()

    # -- connection ------------------------------------------------------------------------

    def _make_client(self) -> Any:
        client = make_client(self.cfg.broker, f"edgeq-agent-{self.device}")
        # The will is fixed at connect time: it says only what stays true (no time, no model).
        lost = {"schema_version": 1, "device": self.device, "state": "offline",
                "reason": "connection lost (last will)"}
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
        self.stopping = stop
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
                self._check_transfer_timeout()
                self._resend_overdue()
            else:
                self._dispatch(arrival)
        except Exception as e:
            log.exception("unexpected error handling %s %s", getattr(arrival, "kind", "timers"),
                          getattr(arrival, "topic", "")[:200])
            with contextlib.suppress(Exception):
                self._event(None, "error", None, f"internal error: {type(e).__name__}: "
                                                 f"{str(e)[:300]}")

    def _shutdown(self) -> None:
        info = self.client.publish(topic(self.device, "status"),
                                   encode(self._status("offline", reason="agent stopped")),
                                   qos=1, retain=True)
        if info.rc == 0:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        if self.transfer:
            self.transfer.file.close()

    def _dispatch(self, a: Arrival) -> None:
        if a.kind is Kind.CONNECTED:
            self._on_connected(a.reason)
        elif a.kind is Kind.DISCONNECTED:
            log.warning("disconnected from %s (%s); reconnecting", self.cfg.broker.url, a.reason)
        elif a.kind is Kind.PUBLISHED:
            self._on_published(a.mid, a.reason)
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
        self._publish_status()

    def _on_subscribed(self, reasons: list[Any]) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused a subscription (%s): check this device's ACL",
                      ", ".join(refused))
        # Only now can acks reach us: resend everything unacknowledged, including what paho
        # re-sent at reconnect before we were listening (a duplicate is ignored by collectors).
        self._resend_spool(include_held=True)

    def _publish_status(self) -> None:
        self.client.publish(topic(self.device, "status"), encode(self._status("online")), qos=1,
                            retain=True)

    def _status(self, state: str, **extra: Any) -> dict[str, Any]:
        active = self.store.active()
        return status_message(
            self.device, state, **extra,
            agent={"version": __version__, "python": platform.python_version()},
            arch=platform.machine(), platform=platform.platform(),
            runtime={"name": self.runtime_name, "version": self.runtime_version},
            model=_model_info(active), previous=_model_info(self.store.previous()),
            busy=self.busy, key_id=self.authority.key_id, seq=self.authority.seq,
            power={"source": self.probe.name if self.probe else None,
                   "reason": self.power_reason or None},
            spool={"pending": len(self.spool), "dropped": self.spool.dropped,
                   "rejected": self.spool.rejected})

    # -- messages --------------------------------------------------------------------------

    def _on_message(self, name: str, payload: bytes) -> None:
        chunk = parse_chunk_topic(name)
        if chunk is not None:
            self._on_chunk(chunk[0], chunk[1], payload)
        elif name == topic(self.device, "cmd"):
            self._on_command(payload)
        elif name == topic(self.device, "ack"):
            self._on_ack(payload)
        elif name == resend_topic() and \
                time.monotonic() - self.last_resend_request >= RESEND_MIN_INTERVAL_S:
            self.last_resend_request = time.monotonic()  # a forged flood cannot amplify
            self._resend_spool()

    def _on_command(self, payload: bytes) -> None:
        try:
            cmd = parse_command(payload)
        except ProtocolError as e:
            log.warning("refused command: %s", e)
            self._event(e.cmd_id, "error", "rejected", str(e))
            return
        if self.authority.taken(cmd.id):  # a redelivery (also across restarts): already ran
            log.info("command %s: already taken, ignoring the repeat", cmd.id)
            return
        self.authority.take(cmd.id)
        expires = cmd.args.get("expires") or 0.0
        if expires and expires < time.time():
            log.warning("command %s (%s) expired %.0f s ago; dropped", cmd.id, cmd.type,
                        time.time() - expires)
            self._event(cmd.id, "error", "rejected", f"expired {time.time() - expires:.0f} s "
                        "before the device could take it (it was busy); nothing was done")
            return
        log.info("command %s: %s", cmd.id, cmd.type)
        handlers = {"ping": self._ping, "deploy": self._deploy, "rollback": self._rollback,
                    "benchmark": self._measure, "evaluate": self._measure}
        try:
            handlers[cmd.type](cmd)
        except Exception as e:
            log.exception("command %s failed", cmd.id)
            self._event(cmd.id, "error", "failed", f"{type(e).__name__}: {e}")

    def _event(self, cmd_id: str | None, level: str, state: str | None, message: str,
               **details: Any) -> None:
        event = event_message(self.device, cmd_id, level, state, message, **details)
        self.client.publish(topic(self.device, "event"), encode(event), qos=1,
                            properties=_correlation(cmd_id))

    def _ping(self, cmd: Command) -> None:
        self._event(cmd.id, "info", "pong", "pong", status=self._status("online"))

    # -- deploy ----------------------------------------------------------------------------

    def _deploy(self, cmd: Command) -> None:
        manifest = cmd.args["manifest"]
        try:
            self._accept(cmd.id, manifest)
            path = self.store.incoming / f"{cmd.id}.part"
            f = _reserved_file(path, manifest["size"])
        except Rejected as e:
            self._reject(cmd.id, str(e))
            return
        deadline = min(time.monotonic() + self.cfg.transfer_deadline_s,
                       time.monotonic() + max(0.0, manifest["expires"] - time.time()))
        self.transfer = Transfer(cmd.id, manifest, path, f, deadline=deadline)
        self._set_busy(cmd)
        log.info("deploy %s: receiving %s (%d bytes in %d chunks)", cmd.id, manifest["name"],
                 manifest["size"], manifest["chunks"])
        self._event(cmd.id, "info", "ready", f"send {manifest['chunks']} chunks")

    def _accept(self, cmd_id: str, manifest: dict[str, Any]) -> None:
        """Everything that can be refused before a single chunk is sent. A newer signed deploy
        pre-empts one still receiving (a replayed or stalled one cannot hold the device)."""
        try:
            self.authority.check(signed_part(manifest), "deploy")
        except NotAuthorized as e:
            raise Rejected(str(e)) from None
        if manifest["size"] > self.cfg.max_bundle_bytes:
            raise Rejected(f"bundle is {manifest['size']:,} bytes, over this device's limit of "
                           f"{self.cfg.max_bundle_bytes:,} bytes (--max-bundle-mb)")
        free = shutil.disk_usage(self.cfg.data_dir).free
        if free < 3 * manifest["size"]:
            raise Rejected(f"only {free:,} bytes free in {self.cfg.data_dir}; need "
                           f"{3 * manifest['size']:,}")
        self.authority.accept(manifest["seq"])
        if self.transfer is not None:
            self._abort(f"pre-empted by the newer signed deploy {cmd_id}")

    def _reject(self, cmd_id: str, why: str) -> None:
        active = self.store.active()
        kept = f"{active.name} ({active.model_sha256[:12]})" if active else "none"
        log.warning("deploy %s rejected: %s", cmd_id, why)
        self._event(cmd_id, "error", "rejected", f"{why}; active model unchanged: {kept}")

    def _on_chunk(self, deploy_id: str, index: int, payload: bytes) -> None:
        t = self.transfer
        if t is None or deploy_id != t.cmd_id:
            log.debug("ignoring chunk %d of deploy %s (not receiving it)", index, deploy_id)
            return
        m = t.manifest
        expected = min(m["chunk_size"], m["size"] - index * m["chunk_size"])
        if index >= m["chunks"] or len(payload) != expected:
            self._abort(f"chunk {index} has {len(payload)} bytes; expected {max(expected, 0)} "
                        f"(of {m['chunks']} chunks)")
            return
        try:
            t.file.seek(index * m["chunk_size"])
            t.file.write(payload)
        except OSError as e:
            self._abort(f"cannot write chunk {index}: {e.strerror or e}")
            return
        t.received.add(index)
        t.last_activity = time.monotonic()
        if len(t.received) == m["chunks"]:
            self._finish()

    def _abort(self, why: str) -> None:
        t = self.transfer
        assert t is not None
        self.transfer = None
        self._set_busy(None)
        with contextlib.suppress(OSError):
            t.file.close()
        t.path.unlink(missing_ok=True)
        self._reject(t.cmd_id, why)

    def _check_transfer_timeout(self) -> None:
        t = self.transfer
        if t and time.monotonic() - t.last_activity > self.cfg.transfer_timeout_s:
            self._abort(f"transfer stalled for {self.cfg.transfer_timeout_s:.0f} s after "
                        f"{len(t.received)} of {t.manifest['chunks']} chunks")
        elif t and time.monotonic() > t.deadline:
            self._abort(f"transfer not complete by its deadline ({len(t.received)} of "
                        f"{t.manifest['chunks']} chunks)")

    def _set_busy(self, cmd: Command | None) -> None:
        """Say in the retained status which command runs now (None: idle)."""
        self.busy = None if cmd is None else {"cmd_id": cmd.id, "type": cmd.type,
                                              "since": round(time.time(), 3)}
        self._publish_status()

    def _finish(self) -> None:
        t = self.transfer
        assert t is not None
        self.transfer = None
        self.busy = None
        staging = self.store.incoming / f"{t.cmd_id}.staging"
        try:
            t.file.flush()
            os.fsync(t.file.fileno())
            t.file.close()
            bundle = self._check_received(t, staging)
            final = self.store.install(staging, t.manifest["sha256"])
            self.store.activate(final)
        except Rejected as e:
            self._reject(t.cmd_id, str(e))
            self._publish_status()
            return
        except OSError as e:  # a full disk while installing: the old model stays active
            self._reject(t.cmd_id, f"cannot install the model: {e.strerror or e}")
            self._publish_status()
            return
        finally:
            t.path.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        log.info("deploy %s: activated %s (%s)", t.cmd_id, bundle.name, bundle.model_sha256[:12])
        self._event(t.cmd_id, "info", "activated", f"activated {bundle.name}",
                    model=_model_info(self.store.active()), runtime=self.runtime_name)
        self._publish_status()

    def _check_received(self, t: Transfer, staging: Path) -> Bundle:
        sha = sha256_file(t.path)
        if sha != t.manifest["sha256"]:
            raise Rejected(f"received bundle has sha256 {sha[:12]}..., the signed manifest says "
                           f"{t.manifest['sha256'][:12]}... (corrupted in transfer)")
        self._event(t.cmd_id, "info", "received", f"{t.manifest['size']:,} bytes, sha256 and "
                                                  "signature verified; checking the model")
        try:
            bundle = extract_bundle(t.path, staging)
        except BundleError as e:
            raise Rejected(str(e)) from None
        if bundle.model_sha256 != t.manifest["model_sha256"]:
            raise Rejected("model sha256 in the bundle differs from the manifest's")
        check = check_in_child(staging, self.runtime_name, python=self.cfg.child_python)
        if not check.ok:
            raise Rejected(f"model does not load and invoke in {self.runtime_name}: {check.error}")
        return Bundle(self.store.models / t.manifest["sha256"], bundle.meta)

    def _rollback(self, cmd: Command) -> None:
        """Make the previous model active again, after the same load check as a deploy; the
        command must carry a statement signed for this device naming that model."""
        previous = self.store.previous()
        authorization = cmd.args["authorization"]
        try:
            self.authority.check(authorization, "rollback")
        except NotAuthorized as e:
            self._reject(cmd.id, str(e))
            return
        if self.transfer is not None or previous is None:
            self._reject(cmd.id, "busy: a deploy is receiving" if self.transfer else
                         "no previous model to roll back to")
            return
        if authorization["to"] != previous.directory.name:
            self._reject(cmd.id, f"the signed rollback names model {authorization['to'][:12]}, "
                                 f"the kept previous model is {previous.directory.name[:12]}")
            return
        self.authority.accept(authorization["seq"])
        check = check_in_child(previous.directory, self.runtime_name, python=self.cfg.child_python)
        if not check.ok:
            self._reject(cmd.id, f"previous model {previous.name} does not load and invoke in "
                                 f"{self.runtime_name}: {check.error}")
            return
        self.store.rollback()
        log.info("rollback %s: activated %s (%s)", cmd.id, previous.name, previous.model_sha256[:12])
        self._event(cmd.id, "info", "activated", f"rolled back to {previous.name}",
                    model=_model_info(self.store.active()), runtime=self.runtime_name)
        self._publish_status()

    # -- benchmark / evaluate --------------------------------------------------------------

    def _measure(self, cmd: Command) -> None:
        bundle = self.store.active()
        if bundle is None:
            self._event(cmd.id, "error", "failed", "no model deployed yet; run `edgeq deploy` first")
            return
        self._event(cmd.id, "info", "started", f"{cmd.type} {bundle.name} on {self.runtime_name}")
        self._set_busy(cmd)
        result = self._new_result(cmd, bundle)
        try:
            self._fill_result(cmd, bundle, result)
        except Interrupted as e:
            result["errors"].append(f"interrupted: the agent is stopping ({e})")
        except Exception as e:
            log.exception("%s %s failed", cmd.type, cmd.id)
            result["errors"].append(f"{type(e).__name__}: {str(e)[:500]}")
        finally:
            self.busy = None
        result = self._publish_result(result)
        self._publish_status()
        if result["errors"]:
            self._event(cmd.id, "error", "failed", "; ".join(result["errors"]),
                        report_id=result["report_id"])
        else:
            self._event(cmd.id, "info", "done", f"{cmd.type} report {result['report_id']}",
                        report_id=result["report_id"])

    def _fill_result(self, cmd: Command, bundle: Bundle, result: dict[str, Any]) -> None:
        a = cmd.args
        model = bundle.model_path.read_bytes()
        threads = a.get("threads", 1)

        def open_model() -> Runtime:
            return open_runtime(self.runtime_name, model, num_threads=threads)

        eval_samples = raw_samples(bundle, a["max_samples"])
        stop = self.stopping.is_set
        if cmd.type == "evaluate":
            with open_model() as rt:
                result["runtime"]["version"] = rt.version
                result["accuracy"] = evaluate(rt, bundle, eval_samples, stop)
            return
        samples = eval_samples or random_inputs(bundle.inputs())
        cfg = BenchmarkConfig(a["runs"], a["warmup"], a["min_seconds"], a["max_seconds"],
                              should_stop=stop)
        latency, rt = benchmark(open_model, samples, cfg)
        with rt:
            result["runtime"]["version"] = rt.version
            result["latency"] = {**latency, "threads": threads,
                                 "inputs": "eval set" if eval_samples else "random"}
            result["power"] = (measure_power(self.probe, self.power_reason, a["power_window_s"],
                                             _busy_loop(rt, samples, stop), self._wait)
                               if a["power"] else unavailable_power("not requested"))
            if a["evaluate"]:
                result["accuracy"] = evaluate(rt, bundle, eval_samples, stop)

    def _wait(self, seconds: float) -> None:
        """Sleep that ends as soon as the agent is asked to stop."""
        if self.stopping.wait(seconds):
            raise Interrupted("stopped during the idle power window")

    def _new_result(self, cmd: Command, bundle: Bundle) -> dict[str, Any]:
        return {"schema_version": 1, "report_id": uuid.uuid4().hex, "cmd_id": cmd.id,
                "type": cmd.type, "device": self.device, "ts": time.time(),
                "agent": {"version": __version__, "python": platform.python_version()},
                "arch": platform.machine(),
                "runtime": {"name": self.runtime_name, "version": self.runtime_version,
                            "threads": cmd.args.get("threads", 1)},
                "model": _model_info(bundle), "latency": None, "power": None, "accuracy": None,
                "errors": []}

    # -- results: spooled until a collector acknowledges them -----------------------------

    def _publish_result(self, result: dict[str, Any]) -> dict[str, Any]:
        """Make the result valid protocol (NaN from the data becomes null, named in `errors`),
        spool it, send it. Returns what was sent."""
        result = sendable(result)
        try:
            self.spool.put(result)
        except OSError as e:  # full disk: still sent now, only not kept for a resend
            log.error("cannot spool report %s (%s); sending it unspooled", result["report_id"],
                      e.strerror or e)
        self._send(result)
        return result

    def _send(self, result: dict[str, Any]) -> None:
        try:
            payload = encode(result)
        except ValueError as e:  # a spool entry from an older agent: never retry it
            log.error("report %s cannot be sent (%s); moved aside", result.get("report_id"), e)
            self.spool.move_aside(str(result.get("report_id")), str(e))
            return
        info = self.client.publish(topic(self.device, "result"), payload, qos=1,
                                   properties=_correlation(result["cmd_id"]))
        # paho keeps a QoS 1 message queued across reconnects even when rc says "no
        # connection": remember it so a reconnect does not send it a second time.
        self.inflight[info.mid] = result["report_id"]
        self.last_sent[result["report_id"]] = time.monotonic()

    def _resend_spool(self, older_than_s: float = 0.0, include_held: bool = False) -> None:
        held = set() if include_held else set(self.inflight.values())
        now = time.monotonic()
        for message in self.spool.pending():
            report_id = str(message.get("report_id"))
            if report_id in held or now - self.last_sent.get(report_id, -1e9) < older_than_s:
                continue
            log.info("resending report %s (no collector has acknowledged it)", report_id)
            self._send(message)

    def _resend_overdue(self) -> None:
        due = [t for t in self.last_sent.values() if time.monotonic() - t > self.cfg.resend_after_s]
        if due and self.client.is_connected():
            self._resend_spool(self.cfg.resend_after_s)

    def _on_published(self, mid: int, reason: Any) -> None:
        report_id = self.inflight.pop(mid, None)
        if report_id is not None and getattr(reason, "is_failure", False):
            log.error("broker refused report %s (%s); kept in the spool", report_id, reason)

    def _on_ack(self, payload: bytes) -> None:
        try:
            report_ids = parse_ack(payload)
        except ProtocolError as e:
            log.warning("ignoring ack: %s", e)
            return
        for report_id in report_ids:
            self.spool.ack(report_id)
            self.last_sent.pop(report_id, None)


RESEND_MIN_INTERVAL_S = 10.0  # a resend request (or a flood of forged ones) at most this often


def sendable(result: dict[str, Any]) -> dict[str, Any]:
    """A result as protocol v1 accepts it: non-finite numbers become null (named in `errors`);
    if it still fails the result schema, only its identity and the reason are kept."""
    clean, replaced = finite_or_null(result)
    if replaced:
        clean["errors"] = [*list(clean.get("errors") or []),
                           f"non-finite values replaced by null: {', '.join(replaced[:10])}"]
    try:
        check_result(clean)
        return clean
    except ProtocolError as e:
        keep = ("schema_version", "report_id", "cmd_id", "type", "device", "ts", "agent", "arch",
                "runtime", "model")
        return {**{k: clean[k] for k in keep}, "latency": None, "power": None, "accuracy": None,
                "errors": [*[str(x)[:500] for x in clean.get("errors") or []][:20],
                           f"report not valid protocol, contents dropped: {str(e)[:300]}"]}


def _reserved_file(path: Path, size: int) -> BinaryIO:
    """The .part file of a transfer with its whole size reserved on disk now, so a full disk is
    a clean rejection before the transfer, not a failure halfway through it."""
    f = open(path, "w+b")  # noqa: SIM115 - closed in _finish/_abort
    try:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except AttributeError:  # no posix_fallocate (macOS): sparse file
            f.truncate(size)
    except OSError as e:
        f.close()
        path.unlink(missing_ok=True)
        raise Rejected(f"cannot reserve {size:,} bytes for the bundle: {e.strerror or e}") from None
    return f


def _busy_loop(rt: Runtime, samples: list[list[Any]],
               should_stop: Callable[[], bool]) -> Callable[[float], int]:
    def run(seconds: float) -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            if count % 16 == 0 and should_stop():
                raise Interrupted("stopped during the busy power window")
            rt.load_inputs(samples[count % len(samples)])
            rt.invoke()
            count += 1
        return count
    return run


def _model_info(bundle: Bundle | None) -> dict[str, Any] | None:
    if bundle is None:
        return None
    return {"name": bundle.name, "sha256": bundle.model_sha256,
            "bytes": bundle.meta["model"]["bytes"], "bundle": bundle.directory.name}


def _correlation(cmd_id: str | None) -> Any:
    return properties("PUBLISH", CorrelationData=cmd_id.encode()) if cmd_id else None
