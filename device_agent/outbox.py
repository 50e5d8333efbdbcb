"""Results on their way to a collector: spooled to disk before they are published, resent after
reconnects and every `resend_after_s`, deleted only when a collector acknowledges storing them."""

from __future__ import annotations

import logging
import time
from typing import Any

from .connection import properties
from .protocol import ProtocolError, check_result, encode, finite_or_null, parse_ack, topic
from .spool import Spool

log = logging.getLogger("edgeq.agent")

RESEND_MIN_INTERVAL_S = 10.0  # a resend request (or a flood of forged ones) at most this often


class Outbox:
    """The agent's results between measurement and a collector's acknowledgement."""

    def __init__(self, client: Any, device: str, spool: Spool, resend_after_s: float) -> None:
        self.client = client
        self.device = device
        self.spool = spool
        self.resend_after_s = resend_after_s
        self.inflight: dict[int, str] = {}  # paho message id -> spooled report_id
        self.last_sent: dict[str, float] = {}  # report_id -> when it was last published
        self.last_resend_request = -1e9

    def publish(self, result: dict[str, Any]) -> dict[str, Any]:
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
                                   properties=correlation(result["cmd_id"]))
        # paho keeps a QoS 1 message queued across reconnects even when rc says "no
        # connection": remember it so a reconnect does not send it a second time.
        self.inflight[info.mid] = result["report_id"]
        self.last_sent[result["report_id"]] = time.monotonic()

    def resend(self, older_than_s: float = 0.0, include_held: bool = False) -> None:
        """Send every spooled result not acknowledged yet (not those paho still holds, unless
        `include_held`; not those sent less than `older_than_s` ago)."""
        held = set() if include_held else set(self.inflight.values())
        now = time.monotonic()
        for message in self.spool.pending():
            report_id = str(message.get("report_id"))
            if report_id in held or now - self.last_sent.get(report_id, -1e9) < older_than_s:
                continue
            log.info("resending report %s (no collector has acknowledged it)", report_id)
            self._send(message)

    def resend_overdue(self) -> None:
        """The timer: resend results no collector has acknowledged within `resend_after_s`."""
        due = [t for t in self.last_sent.values() if time.monotonic() - t > self.resend_after_s]
        if due and self.client.is_connected():
            self.resend(self.resend_after_s)

    def on_resend_request(self) -> None:
        """A collector asks for unacknowledged results; honoured at most every 10 s so a forged
        flood cannot amplify."""
        if time.monotonic() - self.last_resend_request >= RESEND_MIN_INTERVAL_S:
            self.last_resend_request = time.monotonic()
            self.resend()

    def on_published(self, mid: int, reason: Any) -> None:
        """paho's PUBACK for a result: it left paho's queue (kept in the spool until acked)."""
        report_id = self.inflight.pop(mid, None)
        if report_id is not None and getattr(reason, "is_failure", False):
            log.error("broker refused report %s (%s); kept in the spool", report_id, reason)

    def on_ack(self, payload: bytes) -> None:
        """A collector stored these results: delete them from the spool."""
        try:
            report_ids = parse_ack(payload)
        except ProtocolError as e:
            log.warning("ignoring ack: %s", e)
            return
        for report_id in report_ids:
            self.spool.ack(report_id)
            self.last_sent.pop(report_id, None)


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


def correlation(cmd_id: str | None) -> Any:
    """MQTT v5 correlation data tying a message to its command."""
    return properties("PUBLISH", CorrelationData=cmd_id.encode()) if cmd_id else None
