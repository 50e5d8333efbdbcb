"""The host's side of a conversation with devices: one MQTT connection that sends checked
commands and waits for the device's events and results (matched by command id)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from device_agent.connection import Arrival, Broker, Inbox, Kind, make_client, properties
from device_agent.protocol import Command, ProtocolError, all_devices, decode, device_of, encode, topic
from edgeq.errors import DeviceRefused, DeviceUnreachable

log = logging.getLogger("edgeq")
CONNECT_TIMEOUT_S = 10.0


class HostSession:
    """A connected host client. Use as a context manager."""

    def __init__(self, broker: Broker, client_id: str | None = None, max_inflight: int = 20) -> None:
        self.broker = broker
        self.inbox = Inbox()
        self.unread: list[tuple[str, dict[str, Any]]] = []
        self.client = make_client(broker, client_id or f"edgeq-host-{uuid.uuid4().hex[:10]}")
        self.client.max_inflight_messages_set(max_inflight)  # paho: only before connecting
        self.inbox.attach(self.client)

    def __enter__(self) -> HostSession:
        try:
            self.client.connect(self.broker.host, self.broker.port, self.broker.keepalive)
        except OSError as e:
            raise DeviceUnreachable(f"cannot reach broker {self.broker.url}: "
                                    f"{e.strerror or e}") from e
        self.client.loop_start()
        reason = self._wait_control(Kind.CONNECTED, CONNECT_TIMEOUT_S)
        if reason.is_failure:
            self.__exit__()
            raise DeviceUnreachable(f"broker {self.broker.url} refused the connection: {reason}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _arrivals(self, timeout: float) -> Iterator[Arrival]:
        """What the network thread hands over, until `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            arrival = self.inbox.get(timeout=left)
            if arrival is None:
                return
            yield arrival

    def _decoded(self, arrival: Arrival) -> dict[str, Any] | None:
        """A protocol message as a dict; None for control arrivals and undecodable payloads."""
        if arrival.kind is not Kind.MESSAGE:
            return None
        try:
            return decode(arrival.payload, arrival.topic)
        except ProtocolError as e:
            log.warning("ignoring %s", e)
            return None

    def _wait_control(self, kind: Kind, timeout: float) -> Any:
        for arrival in self._arrivals(timeout):
            if arrival.kind is kind:
                return arrival.reason
            if (message := self._decoded(arrival)) is not None:
                self.unread.append((arrival.topic, message))
        raise DeviceUnreachable(f"broker {self.broker.url} did not answer within {timeout:.0f} s")

    def subscribe(self, *filters: str) -> None:
        """Subscribe (QoS 1) and wait for the broker's acknowledgement."""
        rc, _ = self.client.subscribe([(f, 1) for f in filters])
        if rc != 0:
            raise DeviceUnreachable(f"subscribe to {filters} failed (rc {rc})")
        self._wait_control(Kind.SUBSCRIBED, CONNECT_TIMEOUT_S)

    def wait_for(self, match: Callable[[str, dict[str, Any]], bool], timeout: float,
                 what: str) -> tuple[str, dict[str, Any]]:
        """The first message (already received or arriving) that `match` accepts."""
        for k, (name, message) in enumerate(self.unread):
            if match(name, message):
                return self.unread.pop(k)
        for arrival in self._arrivals(timeout):
            decoded = self._decoded(arrival)
            if decoded is None:
                continue
            if match(arrival.topic, decoded):
                return arrival.topic, decoded
            self.unread.append((arrival.topic, decoded))
        raise DeviceUnreachable(f"timed out after {timeout:.0f} s waiting for {what}")

    def require_online(self, device: str, timeout: float = 3.0) -> dict[str, Any]:
        """The device's retained status; DeviceUnreachable if it is offline or unknown."""
        self.subscribe(topic(device, "status"))
        try:
            _, status = self.wait_for(lambda n, m: n == topic(device, "status"), timeout,
                                      f"the status of {device}")
        except DeviceUnreachable:
            raise DeviceUnreachable(f"device '{device}' has never connected to {self.broker.url} "
                                    f"(no retained status on {topic(device, 'status')})") from None
        if status.get("state") != "online":
            why = status.get("reason") or "offline"
            raise DeviceUnreachable(f"device '{device}' is offline ({why}; status "
                                    f"{_age(status.get('ts'))}); start its agent and retry")
        return status

    def publish_command(self, device: str, cmd: Command, expiry_s: float) -> Any:
        """Queue a command (QoS 1); the broker drops it if the device has not taken it in
        expiry_s. Returns the publish handle."""
        return self.client.publish(topic(device, "cmd"), encode(cmd.to_dict()), qos=1,
                                   properties=properties("PUBLISH",
                                                         MessageExpiryInterval=max(1, int(expiry_s))))

    def send(self, device: str, cmd: Command, expiry_s: float) -> None:
        """Publish a command and wait until the broker has it."""
        self.publish_command(device, cmd, expiry_s).wait_for_publish(CONNECT_TIMEOUT_S)

    def issue(self, device: str, cmd: Command, expiry_s: float, *also: str) -> None:
        """Listen to the device's events (and the `also` topics), check it is online, send."""
        self.subscribe(topic(device, "event"), *also)
        self.require_online(device)
        self.send(device, cmd, expiry_s)

    def answer(self, device: str, cmd_id: str, states: tuple[str, ...], timeout: float,
               what: str) -> dict[str, Any]:
        """Wait for an event of `cmd_id` in one of `states`; a rejection or failure raises."""
        done = set(states) | {"rejected", "failed"}

        def match(name: str, m: dict[str, Any]) -> bool:
            return (name == topic(device, "event") and m.get("cmd_id") == cmd_id
                    and m.get("state") in done)
        _, event = self.wait_for(match, timeout, what)
        if event["state"] in ("rejected", "failed") and event["state"] not in states:
            raise DeviceRefused(f"device '{device}': {event.get('message', event['state'])}")
        return event


def _age(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "time not recorded"
    return f"{max(0.0, time.time() - ts):.0f} s ago"


def new_command_id(kind: str) -> str:
    """A unique, protocol-valid command id."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def list_devices(broker: Broker, settle_s: float = 0.5) -> list[dict[str, Any]]:
    """Every device's retained status, by device id."""
    with HostSession(broker) as s:
        s.subscribe(all_devices("status"))
        found: dict[str, dict[str, Any]] = {}
        while True:
            try:
                name, status = s.wait_for(lambda n, m: True, settle_s, "statuses")
            except DeviceUnreachable:
                break
            device = device_of(name)
            if device:
                found[device] = {**status, "device": device}
    return [found[d] for d in sorted(found)]
