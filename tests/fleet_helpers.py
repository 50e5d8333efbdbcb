"""Helpers that speak the fleet protocol by hand (deploy, ping, status) for the fleet tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqtt_env import wait_until

from device_agent.connection import Broker
from device_agent.protocol import chunk_topic, encode, topic
from edgeq.errors import DeviceUnreachable
from edgeq.fleet.deploy import DeployConfig, build_bundle, deploy, signed_manifest
from edgeq.fleet.session import HostSession, new_command_id

QUICK = {"runs": 20, "warmup": 2, "power_window_s": 0.2}


def host(broker) -> Broker:
    return Broker.from_url(broker.url)


def status_of(broker, device: str) -> dict[str, Any] | None:
    """The retained status of `device`, or None."""
    with HostSession(host(broker)) as s:
        s.subscribe(topic(device, "status"))
        try:
            return s.wait_for(lambda n, m: True, 1.0, "status")[1]
        except DeviceUnreachable:
            return None


def wait_online(broker, device: str, model_sha: str | None = None) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        s = status_of(broker, device)
        ok = s and s["state"] == "online" and (model_sha is None or
                                               (s.get("model") or {}).get("sha256") == model_sha)
        return s if ok else None
    return wait_until(ready, 30, f"{device} online")


def deploy_to(broker, device: str, model: Path, key: Path, **kw: Any) -> dict[str, Any]:
    return deploy(DeployConfig(model, device, host(broker), key, show_progress=False,
                               timeout_s=30, **kw))


def signed_bundle(tmp: Path, model: Path, key: Path, eval_: Path | None = None,
                  chunk_size: int = 16 * 1024, device: str = "dev1",
                  lifetime_s: float = 300.0) -> tuple[bytes, dict[str, Any]]:
    """A bundle and its manifest signed for `device`, as `edgeq deploy` makes them."""
    meta = build_bundle(DeployConfig(model, "x", Broker("h", 1), key, eval_), tmp / "b.zip")
    data = (tmp / "b.zip").read_bytes()
    return data, signed_manifest(key, device, data, meta, chunk_size, lifetime_s)


def raw_deploy(broker, device: str, data: bytes, manifest: dict[str, Any],
               corrupt: int | None = None, send: int | None = None,
               cmd_id: str | None = None) -> dict[str, Any]:
    """Speak the deploy protocol by hand: optionally flip a byte of chunk `corrupt`, or send
    only the first `send` chunks. Returns the final event; a rejection raises DeviceRefused."""
    cmd_id = cmd_id or new_command_id("deploy")
    with HostSession(host(broker)) as s:
        s.subscribe(topic(device, "event"))
        s.client.publish(topic(device, "cmd"), encode({"id": cmd_id, "type": "deploy",
                                                       "manifest": manifest}), qos=1)
        s.answer(device, cmd_id, ("ready",), 15, "ready")
        size = manifest["chunk_size"]
        for n in range(manifest["chunks"] if send is None else send):
            chunk = bytearray(data[n * size:(n + 1) * size])
            if n == corrupt:
                chunk[len(chunk) // 2] ^= 0xFF
            s.client.publish(chunk_topic(device, cmd_id, n), bytes(chunk), qos=1)
        return s.answer(device, cmd_id, ("activated",), 30, "verdict")


def ping(broker, device: str) -> dict[str, Any]:
    cmd_id = new_command_id("ping")  # the agent ignores a command id it has seen
    with HostSession(host(broker)) as s:
        s.subscribe(topic(device, "event"))
        s.client.publish(topic(device, "cmd"), encode({"id": cmd_id, "type": "ping"}), qos=1)
        return s.answer(device, cmd_id, ("pong",), 15, "pong")


def active_sha(broker, device: str) -> str:
    """The sha256 of the model `device` runs now (from its pong)."""
    return ping(broker, device)["status"]["model"]["sha256"]
