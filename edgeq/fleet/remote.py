"""Ask a device to benchmark or evaluate its active model and wait for the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from device_agent.connection import Broker
from device_agent.protocol import Command, ProtocolError, command, topic
from device_agent.signing import SignatureError, authorize
from edgeq.errors import DeviceRefused, InputError
from edgeq.fleet.session import HostSession, new_command_id


def request_report(broker: Broker, device: str, kind: str, timeout_s: float,
                   **args: Any) -> dict[str, Any]:
    """Send a `benchmark` or `evaluate` command and return the device's result message.

    A result that carries errors is returned as it is (the caller shows them); a command the
    device refuses outright (bad arguments, no model) raises DeviceRefused.
    """
    cmd = checked_command(kind, timeout_s, **args)
    results, events = topic(device, "result"), topic(device, "event")

    def match(name: str, m: dict[str, Any]) -> bool:
        if m.get("cmd_id") != cmd.id:
            return False
        refused = name == events and m.get("state") in ("rejected", "failed") and not m.get("report_id")
        return name == results or refused

    with HostSession(broker) as session:
        session.issue(device, cmd, timeout_s, results)
        name, message = session.wait_for(match, timeout_s, f"the {kind} report of '{device}'")
    if name == events:
        raise DeviceRefused(f"device '{device}': {message.get('message')}")
    return message


def rollback(broker: Broker, device: str, key: Path, timeout_s: float) -> dict[str, Any]:
    """Make the device's previous model active again; returns the `activated` event. The
    command carries a statement signed for this device that names the model to go back to (the
    one its status says it keeps). DeviceRefused when it has none (or it no longer loads)."""
    with HostSession(broker) as session:
        session.subscribe(topic(device, "event"))
        previous = (session.require_online(device).get("previous") or {}).get("bundle")
        if not previous:
            raise DeviceRefused(f"device '{device}': no previous model to roll back to")
        try:
            authorization = authorize(key, "rollback", device, max(300.0, 3 * timeout_s),
                                      to=previous)
        except SignatureError as e:
            raise InputError(str(e)) from e
        cmd = checked_command("rollback", timeout_s, authorization=authorization)
        session.send(device, cmd, timeout_s)
        return session.answer(device, cmd.id, ("activated",), timeout_s,
                              f"device '{device}' to roll back")


def checked_command(kind: str, timeout_s: float, **args: Any) -> Command:
    """A command that expires when the host stops waiting; out-of-range arguments are the
    user's input error (exit 2), named as the device would name them."""
    try:
        return command(kind, new_command_id(kind), expires=round(time.time() + timeout_s, 3),
                       **args)
    except ProtocolError as e:
        raise InputError(str(e).replace(f"command {kind}-", "").split(": ", 1)[-1]) from e


def benchmark_timeout(args: dict[str, Any]) -> float:
    """A wait long enough for the requested benchmark: its time cap, two power windows, slack."""
    power = 2 * args.get("power_window_s", 2.0) if args.get("power", True) else 0.0
    return args.get("max_seconds", 60.0) + power + 60.0
