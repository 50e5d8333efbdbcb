"""Broker connection settings shared by the agent and the host: URL, credentials, TLS, client."""

from __future__ import annotations

import contextlib
import enum
import queue
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import AgentError

SCHEMES = {"mqtt": 1883, "mqtts": 8883, "tcp": 1883, "ssl": 8883}


class ConnectionConfigError(AgentError, ValueError):
    """A broker URL, credential or TLS file is unusable; the text says which and why."""


@dataclass(frozen=True)
class Broker:
    """Where and how to connect: `mqtt://host:port` or `mqtts://host:port` (TLS)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    keepalive: int = 30

    @classmethod
    def from_url(cls, url: str, username: str | None = None, password_file: Path | None = None,
                 tls_ca: Path | None = None, keepalive: int = 30) -> Broker:
        """Parse `url`; the password comes from a file so it never shows in `ps`. A password
        inside the URL is refused (and never repeated in the message)."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        shown = redacted(url)
        if parts.password is not None:
            raise ConnectionConfigError(f"broker URL {shown} carries a password: give it with "
                                        "--password-file (a URL shows in `ps` and in logs)")
        if parts.scheme not in SCHEMES:
            raise ConnectionConfigError(f"broker URL {shown}: scheme must be one of "
                                        f"{', '.join(s + '://' for s in SCHEMES)}")
        if not parts.hostname:
            raise ConnectionConfigError(f"broker URL {shown} has no host; expected mqtt://HOST:PORT")
        try:
            port = parts.port or SCHEMES[parts.scheme]
        except ValueError:
            raise ConnectionConfigError(f"broker URL {shown}: bad port; expected 1-65535") from None
        password = None
        if password_file is not None:
            try:
                password = Path(password_file).read_text().strip()
            except OSError as e:
                raise ConnectionConfigError(f"password file {password_file}: {e.strerror}") from e
        if tls_ca is not None and not Path(tls_ca).is_file():
            raise ConnectionConfigError(f"TLS CA file not found: {tls_ca}")
        return cls(parts.hostname, port, parts.scheme in ("mqtts", "ssl") or tls_ca is not None,
                   username or parts.username, password, tls_ca, keepalive)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def redacted(url: str) -> str:
    """`url` with any user:password@ part replaced by ***@ (for messages and logs)."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{head}{sep}{netloc}{slash}{path}"


def make_client(broker: Broker, client_id: str, **kwargs: Any) -> Any:
    """A paho-mqtt 2.x MQTT 5 client with callback API v2, credentials and TLS applied."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, **kwargs)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=str(broker.tls_ca) if broker.tls_ca else None,
                       cert_reqs=ssl.CERT_REQUIRED)
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """Small packets (PUBACKs, events) go out at once instead of waiting on Nagle."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def properties(packet: str, **values: Any) -> Any:
    """MQTT 5 properties for a PUBLISH/CONNECT packet, e.g. MessageExpiryInterval=30."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(getattr(PacketTypes, packet))
    for name, value in values.items():
        setattr(props, name, value)
    return props


class Kind(str, enum.Enum):
    """What the MQTT network thread saw."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    MESSAGE = "message"
    PUBLISHED = "published"
    SUBSCRIBED = "subscribed"


@dataclass(frozen=True)
class Arrival:
    """One event handed from paho's network thread to the thread that does the work."""

    kind: Kind
    topic: str = ""
    payload: bytes = b""
    mid: int = 0
    qos: int = 0
    reason: Any = None  # connect/disconnect/publish reason code; subscribe: the list of codes


class Inbox:
    """paho callbacks only enqueue (they run on the network thread); the owner takes
    arrivals in order. One typed queue for the agent, the collector and the host."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Arrival] = queue.Queue()

    def attach(self, client: Any) -> None:
        """Route the client's callbacks (paho callback API v2) into this inbox."""
        put = self._queue.put
        client.on_connect = lambda c, u, flags, rc, props: put(Arrival(Kind.CONNECTED, reason=rc))
        client.on_disconnect = lambda c, u, flags, rc, props: put(Arrival(Kind.DISCONNECTED,
                                                                          reason=rc))
        client.on_message = lambda c, u, m: put(Arrival(Kind.MESSAGE, m.topic, m.payload, m.mid,
                                                        m.qos))
        client.on_publish = lambda c, u, mid, rc, props: put(Arrival(Kind.PUBLISHED, mid=mid,
                                                                     reason=rc))
        client.on_subscribe = lambda c, u, mid, rcs, props: put(Arrival(Kind.SUBSCRIBED, mid=mid,
                                                                        reason=rcs))

    def get(self, timeout: float) -> Arrival | None:
        """The next arrival, or None after `timeout` seconds."""
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def get_nowait(self) -> Arrival | None:
        """The next arrival if one is waiting."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None
