"""`edgeq collect`: a collector daemon that stores every device result exactly once.

It joins an MQTT 5 shared subscription (`$share/<group>/edgeq/v1/+/result`), so several
collectors split the load; it keeps a persistent session, so results published while it is down
wait at the broker; it acknowledges a message to the broker only after the transaction holding it
has committed, and then tells the device on `edgeq/v1/<device>/ack`, which is when the device
forgets it. A crash anywhere loses nothing: what is not acknowledged is resent, and `report_id`
turns the resend into an ignored duplicate.
Optionally it serves Prometheus text metrics over HTTP.
"""

from __future__ import annotations

import collections
import http.server
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.connection import Arrival, Broker, Inbox, Kind, make_client, properties
from device_agent.protocol import (
    MAX_ACK_IDS,
    MAX_RESULT_BYTES,
    ProtocolError,
    ack_message,
    check_result,
    decode,
    device_of,
    encode,
    resend_topic,
    shared_results,
    topic,
)
from edgeq.fleet.store import ResultStore, open_store

log = logging.getLogger("edgeq")
BATCH = 500
METRICS_IDLE_S = 5.0


@dataclass(frozen=True)
class CollectorConfig:
    """Everything `edgeq collect` needs."""

    broker: Broker
    db: str | Path  # a SQLite file or a postgresql:// URL
    group: str = "edgeq"
    client_id: str | None = None  # default: edgeq-collector-<hostname>-<group>
    session_expiry_s: int = 24 * 3600
    metrics_port: int | None = None
    metrics_bind: str = "127.0.0.1"


class Collector:
    """Subscribes, checks, stores, acknowledges. `run(stop)` blocks until `stop` is set."""

    def __init__(self, cfg: CollectorConfig, store: ResultStore | None = None) -> None:
        self.cfg = cfg
        self.store = store or open_store(cfg.db)
        self.inbox = Inbox()
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_device: collections.Counter[str] = collections.Counter()
        client_id = cfg.client_id or f"edgeq-collector-{socket.gethostname()}-{cfg.group}"
        self.client = make_client(cfg.broker, client_id, manual_ack=True)
        self.client.reconnect_delay_set(1, 30)
        self.inbox.attach(self.client)
        self.connected = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Connect (retrying with backoff) and store results until `stop` is set."""
        server = self._serve_metrics() if self.cfg.metrics_port is not None else None
        self.client.connect_async(self.cfg.broker.host, self.cfg.broker.port,
                                  self.cfg.broker.keepalive, clean_start=False,
                                  properties=properties("CONNECT",
                                                        SessionExpiryInterval=self.cfg.session_expiry_s))
        self.client.loop_start()
        last_log = time.monotonic()
        try:
            while not stop.is_set():
                self._step(self._batch())
                if time.monotonic() - last_log > 10 and self.counts["received"]:
                    last_log = time.monotonic()
                    log.info("collector: %s", self.summary())
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            if server:
                server.shutdown()
            self.store.close()
            log.info("collector stopped: %s", self.summary())

    def summary(self) -> str:
        c = self.counts
        return (f"{c['received']} received, {c['stored']} stored, {c['duplicates']} duplicates, "
                f"{c['invalid']} invalid")

    def _batch(self) -> list[Arrival]:
        first = self.inbox.get(timeout=0.2)
        items = [] if first is None else [first]
        while items and len(items) < BATCH and (more := self.inbox.get_nowait()) is not None:
            items.append(more)
        return items

    def _step(self, items: list[Arrival]) -> None:
        """Check, store and acknowledge one batch. Total: a message that cannot be stored is
        quarantined (kept for inspection, counted) and acknowledged, so it never comes back."""
        valid, acks, refused = [], [], []
        for item in items:
            if item.kind is Kind.CONNECTED:
                self._on_connected(item.reason)
                continue
            if item.kind is Kind.SUBSCRIBED:
                self._on_subscribed(item.reason)
                continue
            if item.kind is not Kind.MESSAGE:
                continue
            name, payload = item.topic, item.payload
            acks.append((item.mid, item.qos))
            self.counts["received"] += 1
            try:
                valid.append(self._checked(name, payload))
            except ProtocolError as e:
                refused.append((name, str(e), payload))
            except Exception as e:
                log.exception("collector: unexpected error on a message from %s", name)
                refused.append((name, f"internal error: {type(e).__name__}: {e}", payload))
        stored = self._store(valid, refused)
        if refused:
            self._quarantine(refused)
        for mid, qos in acks:  # only after the commits above
            if qos > 0:
                self.client.ack(mid, qos)
        self._ack_devices(stored)

    def _checked(self, name: str, payload: bytes) -> dict[str, Any]:
        result = check_result(decode(payload, name, MAX_RESULT_BYTES))
        if device_of(name) != result["device"]:
            raise ProtocolError(f"{name}: result of device '{result['device']}' on another "
                                "device's topic")
        return result

    def _store(self, valid: list[dict[str, Any]],
               refused: list[tuple[str, str, bytes]]) -> list[dict[str, Any]]:
        """Store `valid` in one transaction; if the store refuses the batch, row by row, and
        the rows it refuses join `refused`. Returns what is stored (new or duplicate)."""
        if not valid:
            return []
        try:
            batches = [(valid, self.store.add(valid))]
        except Exception:
            batches = []
            for r in valid:
                try:
                    batches.append(([r], self.store.add([r])))
                except Exception as e:
                    refused.append((topic(r["device"], "result"), f"store refused it: {e}",
                                    encode(r)))
        stored = [r for rows, _ in batches for r in rows]
        new = sum(n for _, n in batches)
        self.counts["stored"] += new
        self.counts["duplicates"] += len(stored) - new
        self.by_device.update(r["device"] for r in stored)
        return stored

    def _quarantine(self, refused: list[tuple[str, str, bytes]]) -> None:
        self.counts["invalid"] += len(refused)
        for name, why, payload in refused[:5]:
            log.warning("collector: quarantined a message on %s (%d bytes): %s", name[:200],
                        len(payload), why[:300])
        try:
            self.store.quarantine(refused)
        except Exception as e:
            log.error("collector: could not keep %d refused messages: %s", len(refused), e)

    def _ack_devices(self, stored: list[dict[str, Any]]) -> None:
        """Tell each device which of its results are safe in the store (new or duplicate)."""
        by_device: dict[str, dict[str, None]] = collections.defaultdict(dict)
        for r in stored:
            by_device[r["device"]][r["report_id"]] = None  # ordered, each id once
        for device, unique in by_device.items():
            ids = list(unique)
            for k in range(0, len(ids), MAX_ACK_IDS):
                self.client.publish(topic(device, "ack"), encode(ack_message(ids[k:k + MAX_ACK_IDS])),
                                    qos=1)

    def _on_connected(self, reason: Any) -> None:
        if reason.is_failure:
            log.error("collector: broker %s refused the connection: %s", self.cfg.broker.url, reason)
            return
        self.client.subscribe(shared_results(self.cfg.group), qos=1)

    def _on_subscribed(self, reasons: list[Any]) -> None:
        if any(r.is_failure for r in reasons):
            log.error("collector: broker refused the subscription to %s: %s",
                      shared_results(self.cfg.group), ", ".join(map(str, reasons)))
            return
        # devices resend what no collector acknowledged, e.g. results a restarted broker
        # dropped because no collector had re-subscribed yet
        self.client.publish(resend_topic(), encode({"group": self.cfg.group}), qos=1)
        self.connected.set()
        log.info("collector: connected to %s, subscribed to %s, storing in %s",
                 self.cfg.broker.url, shared_results(self.cfg.group), self.store.where)

    def metrics_text(self) -> str:
        """Prometheus text exposition of the collector's counters."""
        lines = []
        for key, help_text in (("received", "Result messages received."),
                               ("stored", "Results stored (new report_id)."),
                               ("duplicates", "Redelivered results ignored (report_id seen)."),
                               ("invalid", "Messages quarantined for not following protocol "
                                           "v1 (kept in the store's quarantine table).")):
            name = f"edgeq_collector_results_{key}_total"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter",
                      f"{name} {self.counts[key]}"]
        name = "edgeq_collector_device_results_total"
        lines += [f"# HELP {name} Valid results received per device.", f"# TYPE {name} counter"]
        lines += [f'{name}{{device="{d}"}} {n}' for d, n in sorted(self.by_device.items())]
        return "\n".join(lines) + "\n"

    def _serve_metrics(self) -> http.server.ThreadingHTTPServer:
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = collector.metrics_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        Handler.timeout = METRICS_IDLE_S  # an idle client cannot hold its thread for ever
        server = http.server.ThreadingHTTPServer((self.cfg.metrics_bind, self.cfg.metrics_port or 0),
                                                 Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("collector: metrics on http://%s:%d/metrics", self.cfg.metrics_bind,
                 server.server_address[1])
        return server
