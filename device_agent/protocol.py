"""MQTT protocol v1 between the edgeq host and device agents: topics, message schemas, checks.

This module is the one place the protocol lives; the host imports it (never the other way).

Topics under `edgeq/v1/<device>/`:

| topic              | direction  | QoS | retained | payload                                        |
|--------------------|------------|-----|----------|------------------------------------------------|
| status             | dev -> host| 1   | yes      | state online/offline (offline is the LWT), ... |
| cmd                | host -> dev| 1   | no       | {id, type, ...args}; checked by parse_command  |
|                    |            |     |          | types: ping, deploy, rollback, benchmark, evaluate |
| deploy/<id>/<n>    | host -> dev| 1   | no       | raw chunk n of the signed bundle               |
| event              | dev -> host| 1   | no       | {cmd_id, level, state, message}                |
| result             | dev -> host| 1   | no       | a benchmark/evaluate report (check_result)     |
| ack                | host -> dev| 1   | no       | {report_ids}: stored by a collector            |

and `edgeq/v1/_all/resend` (host -> every device, QoS 1): a collector has just subscribed, send
what it has not acknowledged now (device ids cannot start with `_`, so `_all` is never a device).

A deploy is a `cmd` of type deploy carrying the manifest; the device answers `ready` (send the
chunks) or `rejected` before any chunk is sent, then `received` and `activated` / `rejected`.
Collectors share results with `$share/<group>/edgeq/v1/+/result`; `report_id` makes storage
idempotent. A device keeps each result on disk until a collector acknowledges it on `ack`
(end to end: a broker's PUBACK only says the broker has it, and a restarted broker without its
subscribers drops it), resending after a reconnect, when a collector announces itself, and
periodically until then.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

PREFIX = "edgeq/v1"
SCHEMA_VERSION = 1
MAX_COMMAND_BYTES = 64 * 1024
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COMMAND_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHARED_GROUP = "edgeq"

# Event states a host waits for. `ready`/`received` are steps; the others end a command.
STEP_STATES = ("ready", "received", "started")
FINAL_STATES = ("activated", "rejected", "done", "failed", "pong")
LEVELS = ("info", "warning", "error")


class ProtocolError(ValueError):
    """A message does not follow protocol v1; the text says which field and what was expected."""

    def __init__(self, message: str, cmd_id: str | None = None) -> None:
        super().__init__(message)
        self.cmd_id = cmd_id


# ---------------------------------------------------------------------------------------------
# topics

def check_device_id(device: str) -> str:
    """Return `device` if it is usable in a topic, else raise ProtocolError."""
    if not DEVICE_ID.match(device or ""):
        raise ProtocolError(f"device id {device!r} is not valid; use 1-64 of A-Z a-z 0-9 _ . -, "
                            "starting with a letter or digit")
    return device


def topic(device: str, leaf: str) -> str:
    """`edgeq/v1/<device>/<leaf>` (leaf: status, cmd, event, result)."""
    return f"{PREFIX}/{check_device_id(device)}/{leaf}"


def chunk_topic(device: str, deploy_id: str, index: int) -> str:
    """Topic of chunk `index` of deploy `deploy_id`."""
    return f"{PREFIX}/{check_device_id(device)}/deploy/{deploy_id}/{index}"


def chunk_filter(device: str) -> str:
    """Subscription filter for every chunk sent to `device`."""
    return f"{PREFIX}/{check_device_id(device)}/deploy/+/+"


def parse_chunk_topic(name: str) -> tuple[str, int] | None:
    """`.../deploy/<id>/<n>` -> (id, n); None when the topic is not a chunk topic."""
    parts = name.split("/")
    if len(parts) != 6 or parts[3] != "deploy" or not parts[5].isdigit():
        return None
    return parts[4], int(parts[5])


def device_of(name: str) -> str | None:
    """The device id in a protocol topic, or None."""
    parts = name.split("/")
    return parts[2] if len(parts) >= 4 and "/".join(parts[:2]) == PREFIX else None


def resend_topic() -> str:
    """Broadcast from a collector that has just subscribed: resend unacknowledged results."""
    return f"{PREFIX}/_all/resend"


def all_devices(leaf: str) -> str:
    """Filter for one leaf of every device (e.g. all statuses)."""
    return f"{PREFIX}/+/{leaf}"


def shared_results(group: str = SHARED_GROUP) -> str:
    """MQTT 5 shared subscription: collectors in one group split the results between them."""
    return f"$share/{group}/{PREFIX}/+/result"


# ---------------------------------------------------------------------------------------------
# schemas: commands are data, checked field by field

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One field of a message: its type, default (or required), and allowed values."""

    kind: type | tuple[type, ...]
    default: Any = _REQUIRED
    low: float | None = None
    high: float | None = None
    pattern: re.Pattern[str] | None = None

    def check(self, where: str, name: str, value: Any) -> Any:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds:  # bool is an int subclass
            raise ProtocolError(f"{where}: '{name}' must be {_kind_text(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            else:
                raise ProtocolError(f"{where}: '{name}' must be {_kind_text(kinds)}, got "
                                    f"{type(value).__name__} {_short(value)}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ProtocolError(f"{where}: '{name}' = {value} is outside [{self.low}, {self.high}]")
        if self.pattern is not None and not self.pattern.match(value):
            raise ProtocolError(f"{where}: '{name}' = {_short(value)} does not match "
                                f"{self.pattern.pattern}")
        return value


def _kind_text(kinds: tuple[type, ...]) -> str:
    return " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "a string",
                        dict: "an object", list: "a list"}.get(k, k.__name__) for k in kinds)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


MANIFEST_FIELDS: dict[str, Field] = {
    "name": Field(str, pattern=re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")),
    "size": Field(int, low=1, high=2**31),
    "sha256": Field(str, pattern=SHA256_HEX),
    "model_sha256": Field(str, pattern=SHA256_HEX),
    "chunks": Field(int, low=1, high=1_000_000),
    "chunk_size": Field(int, low=1024, high=16 * 1024 * 1024),
    "signature": Field(str, "", pattern=re.compile(r"^[A-Za-z0-9+/=]{0,200}$")),
}

COMMAND_FIELDS: dict[str, dict[str, Field]] = {
    "ping": {},
    "deploy": {"manifest": Field(dict)},
    "rollback": {},
    "benchmark": {
        "runs": Field(int, 100, 1, 1_000_000),
        "warmup": Field(int, 10, 0, 100_000),
        "min_seconds": Field(float, 0.0, 0.0, 3600.0),
        "max_seconds": Field(float, 60.0, 0.01, 3600.0),
        "threads": Field(int, 1, 1, 64),
        "power": Field(bool, True),
        "power_window_s": Field(float, 2.0, 0.1, 600.0),
        "evaluate": Field(bool, True),
        "max_samples": Field(int, 0, 0, 10_000_000),
    },
    "evaluate": {"max_samples": Field(int, 0, 0, 10_000_000)},
}


@dataclass(frozen=True)
class Command:
    """A checked command: `args` holds every field of its type, defaults filled in."""

    id: str
    type: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, **self.args}


def decode(payload: bytes, what: str, limit: int | None = None) -> dict[str, Any]:
    """JSON object from a payload, or ProtocolError saying what was wrong."""
    if limit is not None and len(payload) > limit:
        raise ProtocolError(f"{what}: {len(payload)} bytes is over the {limit}-byte limit")
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"{what}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def encode(message: dict[str, Any]) -> bytes:
    """Compact JSON bytes (NaN/inf are refused: they are not JSON)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def _check_fields(where: str, message: dict[str, Any], fields: dict[str, Field],
                  ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    unknown = sorted(set(message) - set(fields) - set(ignore))
    if unknown:
        raise ProtocolError(f"{where}: unknown field '{unknown[0]}'; known: "
                            f"{', '.join(sorted(fields)) or 'none'}")
    out = {}
    for name, spec in fields.items():
        if name not in message:
            if spec.default is _REQUIRED:
                raise ProtocolError(f"{where}: missing field '{name}'")
            out[name] = spec.default
        else:
            out[name] = spec.check(where, name, message[name])
    return out


def parse_command(payload: bytes) -> Command:
    """Check a `cmd` payload against protocol v1; raise ProtocolError naming the problem."""
    message = decode(payload, "command", MAX_COMMAND_BYTES)
    cmd_id = message.get("id")
    if not isinstance(cmd_id, str) or not COMMAND_ID.match(cmd_id):
        raise ProtocolError(f"command: 'id' must be 1-64 of A-Z a-z 0-9 _ . -, got "
                            f"{_short(cmd_id)}")
    kind = message.get("type")
    if kind not in COMMAND_FIELDS:
        raise ProtocolError(f"command {cmd_id}: unknown type {_short(kind)}; known: "
                            f"{', '.join(COMMAND_FIELDS)}", cmd_id)
    try:
        args = _check_fields(f"command {cmd_id} ({kind})", message, COMMAND_FIELDS[kind],
                             ignore=("id", "type"))
        if kind == "deploy":
            args["manifest"] = check_manifest(args["manifest"], f"command {cmd_id} manifest")
    except ProtocolError as e:
        raise ProtocolError(str(e), cmd_id) from None
    return Command(cmd_id, kind, args)


def check_manifest(manifest: dict[str, Any], where: str = "manifest") -> dict[str, Any]:
    """Check a deploy manifest; chunk count must agree with size and chunk size."""
    checked = _check_fields(where, manifest, MANIFEST_FIELDS)
    expected = -(-checked["size"] // checked["chunk_size"])
    if checked["chunks"] != expected:
        raise ProtocolError(f"{where}: {checked['chunks']} chunks for {checked['size']} bytes in "
                            f"{checked['chunk_size']}-byte chunks; expected {expected}")
    return checked


def command(kind: str, cmd_id: str, **args: Any) -> Command:
    """Build a command on the host, checked exactly as the device will check it."""
    return parse_command(encode({"id": cmd_id, "type": kind, **args}))


# ---------------------------------------------------------------------------------------------
# device -> host messages

def status_message(device: str, state: str, **details: Any) -> dict[str, Any]:
    """Retained status: state online/offline plus agent, runtime, arch, model, spool."""
    return {"schema_version": SCHEMA_VERSION, "device": device, "state": state,
            "ts": time.time(), **details}


def event_message(device: str, cmd_id: str | None, level: str, state: str | None,
                  message: str, **details: Any) -> dict[str, Any]:
    """Progress or error of a command (cmd_id None: not tied to a command)."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r} not in {LEVELS}")
    if state is not None and state not in STEP_STATES + FINAL_STATES:
        raise ValueError(f"event state {state!r} not in {STEP_STATES + FINAL_STATES}")
    return {"schema_version": SCHEMA_VERSION, "device": device, "cmd_id": cmd_id, "level": level,
            "state": state, "message": message, "ts": time.time(), **details}


RESULT_TYPES = ("benchmark", "evaluate")
REPORT_ID = re.compile(r"^[A-Za-z0-9_.-]{8,80}$")
RESULT_FIELDS: dict[str, Field] = {
    "schema_version": Field(int, low=1, high=SCHEMA_VERSION),
    "report_id": Field(str, pattern=REPORT_ID),
    "cmd_id": Field(str, pattern=COMMAND_ID),
    "type": Field(str, pattern=re.compile(f"^({'|'.join(RESULT_TYPES)})$")),
    "device": Field(str, pattern=DEVICE_ID),
    "ts": Field(float, low=0),
    "agent": Field(dict),
    "arch": Field(str),
    "runtime": Field(dict),
    "model": Field(dict),
    "latency": Field((dict, type(None)), None),
    "power": Field((dict, type(None)), None),
    "accuracy": Field((dict, type(None)), None),
    "errors": Field(list, []),
}


def check_result(message: dict[str, Any]) -> dict[str, Any]:
    """Check a result payload (the collector stores only what passes)."""
    checked = _check_fields("result", message, RESULT_FIELDS)
    if not SHA256_HEX.match(str(checked["model"].get("sha256", ""))):
        raise ProtocolError("result: 'model.sha256' must be a 64-hex-digit sha256")
    return checked


MAX_ACK_IDS = 1000
ACK_FIELDS: dict[str, Field] = {"report_ids": Field(list)}


def ack_message(report_ids: list[str]) -> dict[str, Any]:
    """A collector's acknowledgement of stored (or already stored) results."""
    return {"report_ids": list(report_ids)}


def parse_ack(payload: bytes) -> list[str]:
    """The report ids of an `ack` payload; ProtocolError if malformed."""
    ids = _check_fields("ack", decode(payload, "ack", MAX_COMMAND_BYTES), ACK_FIELDS)["report_ids"]
    if len(ids) > MAX_ACK_IDS or not all(isinstance(i, str) and REPORT_ID.match(i) for i in ids):
        raise ProtocolError(f"ack: 'report_ids' must be at most {MAX_ACK_IDS} report ids")
    return ids
