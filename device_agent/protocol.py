"""MQTT protocol v1 between the edgeq host and device agents: topics, message schemas, checks.

This module is the one place the protocol lives; the host imports it (never the other way).

Topics under `edgeq/v1/<device>/`:

| topic              | direction  | QoS | retained | payload                                        |
|--------------------|------------|-----|----------|------------------------------------------------|
| status             | dev -> host| 1   | yes      | state online/offline (offline is the LWT), ... |
| cmd                | host -> dev| 1   | no       | {id, type, expires, ...args}; parse_command    |
|                    |            |     |          | types: ping, deploy, rollback, benchmark, evaluate |
| deploy/<id>/<n>    | host -> dev| 1   | no       | raw chunk n of the signed bundle               |
| event              | dev -> host| 1   | no       | {cmd_id, level, state, message}                |
| result             | dev -> host| 1   | no       | a benchmark/evaluate report (check_result)     |
| ack                | host -> dev| 1   | no       | {report_ids}: stored by a collector            |

and `edgeq/v1/_all/resend` (host -> every device, QoS 1): a collector has just subscribed, send
what it has not acknowledged now (device ids cannot start with `_`, so `_all` is never a device).

A deploy is a `cmd` of type deploy carrying the manifest, a signed statement (device_agent.
signing) naming the target device, a growing sequence number, issue and expiry times, the key id
and the bundle and model sha256; a rollback carries the same kind of statement naming the model
to go back to. The device answers `ready` (send the chunks) or `rejected` before any chunk is
sent, then `received` and `activated` / `rejected`. A newer signed deploy pre-empts one that is
still receiving; every command may carry `expires`, after which the device drops it.
Collectors share results with `$share/<group>/edgeq/v1/+/result`; `report_id` makes storage
idempotent. A device keeps each result on disk until a collector acknowledges it on `ack`
(end to end: a broker's PUBACK only says the broker has it, and a restarted broker without its
subscribers drops it), resending after a reconnect, when a collector announces itself, and
periodically until then.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import AgentError

PREFIX = "edgeq/v1"
SCHEMA_VERSION = 1
MAX_COMMAND_BYTES = 64 * 1024
MAX_RESULT_BYTES = 1024 * 1024  # a benchmark report with 1000 raw samples is ~25 KB
MAX_DEPTH = 16  # nesting of any JSON message (results nest 4 deep)
MAX_INT_DIGITS = 18  # |integers| < 1e18: beyond that no field of the protocol means anything
MAX_STRING = 4096
MAX_LIST = 4096
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COMMAND_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHARED_GROUP = "edgeq"

# Event states a host waits for. `ready`/`received` are steps; the others end a command.
STEP_STATES = ("ready", "received", "started")
FINAL_STATES = ("activated", "rejected", "done", "failed", "pong")
LEVELS = ("info", "warning", "error")


class ProtocolError(AgentError, ValueError):
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


GROUP = DEVICE_ID  # group names follow device ids' rules
TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
TAG_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]{0,64}$")
MAX_TAGS = 32


def check_targeting(groups: list[str], tags: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The groups a device joins and its tags (k=v), as its status carries them; ProtocolError
    naming the first one that is not valid."""
    for g in groups:
        if not GROUP.match(g):
            raise ProtocolError(f"group {g!r} is not valid; use 1-64 of A-Z a-z 0-9 _ . -, "
                                "starting with a letter or digit")
    if len(tags) > MAX_TAGS:
        raise ProtocolError(f"{len(tags)} tags is over the limit of {MAX_TAGS}")
    for k, v in tags.items():
        if not TAG_KEY.match(k) or not TAG_VALUE.match(v):
            raise ProtocolError(f"tag {k}={v} is not valid; keys: 1-32 of A-Z a-z 0-9 _ . - "
                                "(starting with a letter or digit), values: 0-64 of those or : +")
    return sorted(set(groups)), dict(sorted(tags.items()))


def parse_tags(texts: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`k=v` arguments as a dict; ProtocolError for one without `=`."""
    tags = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise ProtocolError(f"tag {text!r} is not KEY=VALUE")
        tags[key] = value
    return check_targeting([], tags)[1]


def matches(status: dict[str, Any], group: str | None, tags: dict[str, str]) -> bool:
    """Whether a device's status puts it in `group` (None: any) with every one of `tags`."""
    groups, own = status.get("groups"), status.get("tags")
    if group is not None and not (isinstance(groups, list) and group in groups):
        return False
    return all(isinstance(own, dict) and own.get(k) == v for k, v in tags.items())


def topic(device: str, leaf: str) -> str:
    """`edgeq/v1/<device>/<leaf>` (leaf: status, cmd, event, result)."""
    return f"{PREFIX}/{check_device_id(device)}/{leaf}"


def chunk_topic(device: str, deploy_id: str, index: int) -> str:
    """Topic of chunk `index` of deploy `deploy_id`."""
    return f"{PREFIX}/{check_device_id(device)}/deploy/{deploy_id}/{index}"


def chunk_filter(device: str) -> str:
    """Subscription filter for every chunk sent to `device`."""
    return f"{PREFIX}/{check_device_id(device)}/deploy/+/+"


CHUNK_INDEX = re.compile(r"^[0-9]{1,7}$")  # ASCII digits only ('²'.isdigit() is True)


def parse_chunk_topic(name: str) -> tuple[str, int] | None:
    """`.../deploy/<id>/<n>` -> (id, n); None when the topic is not a well-formed chunk topic."""
    parts = name.split("/")
    if len(parts) != 6 or parts[3] != "deploy" or not CHUNK_INDEX.match(parts[5]) \
            or not COMMAND_ID.match(parts[4]):
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
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"{where}: '{name}' must be a finite number, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
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


# What every signed statement carries (device_agent.signing.authorize).
STATEMENT_FIELDS: dict[str, Field] = {
    "kind": Field(str, pattern=re.compile(r"^(deploy|rollback)$")),
    "target": Field(str, pattern=DEVICE_ID),
    "seq": Field(int, low=1, high=2**62),
    "issued": Field(float, low=0, high=1e11),
    "expires": Field(float, low=0, high=1e11),
    "key_id": Field(str, pattern=re.compile(r"^[0-9a-f]{16}$")),
    "signature": Field(str, "", pattern=re.compile(r"^[A-Za-z0-9+/=]{0,200}$")),
}
MANIFEST_FIELDS: dict[str, Field] = {
    **STATEMENT_FIELDS,
    "name": Field(str, pattern=re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")),
    "size": Field(int, low=1, high=2**31),
    "sha256": Field(str, pattern=SHA256_HEX),
    "model_sha256": Field(str, pattern=SHA256_HEX),
    "chunks": Field(int, low=1, high=1_000_000),
    "chunk_size": Field(int, low=1024, high=16 * 1024 * 1024),
}
TRANSFER_FIELDS = ("chunks", "chunk_size")  # how it travels; not signed (sha256 covers content)
ROLLBACK_FIELDS: dict[str, Field] = {**STATEMENT_FIELDS, "to": Field(str, pattern=SHA256_HEX)}
# Every command may carry a deadline (Unix time): the agent drops it if it dequeues it later.
COMMON_FIELDS: dict[str, Field] = {"expires": Field(float, 0.0, 0, 1e11)}

COMMAND_FIELDS: dict[str, dict[str, Field]] = {
    "ping": {},
    "deploy": {"manifest": Field(dict)},
    "rollback": {"authorization": Field(dict)},
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


def decode(payload: bytes, what: str, limit: int | None = MAX_COMMAND_BYTES) -> dict[str, Any]:
    """A JSON object from a payload, or ProtocolError saying what was wrong; total: any bytes
    give one or the other. Refused: over `limit` bytes, NaN/Infinity (not JSON), numbers that
    overflow a double or have more than MAX_INT_DIGITS digits, nesting beyond MAX_DEPTH."""
    if not isinstance(payload, (bytes, bytearray)):
        raise ProtocolError(f"{what}: payload is not bytes")
    if limit is not None and len(payload) > limit:
        raise ProtocolError(f"{what}: {len(payload):,} bytes is over the {limit:,}-byte limit")
    if _nesting(payload) > MAX_DEPTH:
        raise ProtocolError(f"{what}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_no_constant,
                           parse_int=_bounded_int, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"{what}: not valid JSON ({_short(str(e))})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _nesting(payload: bytes | bytearray) -> int:
    """Deepest bracket nesting outside strings, found before parsing (json recurses once per
    level): strings are cut out and only the brackets walked, both by the regex engine."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", bytes(payload))):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                break
    return deepest


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer with {len(text.lstrip('-'))} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} overflows a double")
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
        args = _check_fields(f"command {cmd_id} ({kind})", message,
                             {**COMMAND_FIELDS[kind], **COMMON_FIELDS}, ignore=("id", "type"))
        if kind == "deploy":
            args["manifest"] = check_manifest(args["manifest"], f"command {cmd_id} manifest")
        if kind == "rollback":
            args["authorization"] = _check_fields(f"command {cmd_id} authorization",
                                                  args["authorization"], ROLLBACK_FIELDS)
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


def signed_part(manifest: dict[str, Any]) -> dict[str, Any]:
    """The statement a deploy manifest's signature covers (all but the transfer fields)."""
    return {k: v for k, v in manifest.items() if k not in TRANSFER_FIELDS}


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


_NUMBER = (int, float)
# Fields inside a result that collectors store and reports read: (path, types, low, high).
# Each is optional (missing or null); what is there must have this type and range.
RESULT_PATHS: tuple[tuple[str, tuple[type, ...], float | None, float | None], ...] = (
    ("model.name", (str,), None, None), ("model.bytes", (int,), 0, 2**40),
    ("runtime.name", (str,), None, None), ("runtime.version", (str,), None, None),
    ("runtime.threads", (int,), 1, 1024),
    *((f"latency.{k}", _NUMBER, 0, 1e9) for k in (
        "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "init_ms",
        "first_inference_ms")),
    ("latency.runs", (int,), 0, 10**12), ("latency.samples_ms", (list,), None, None),
    *((f"power.{k}", _NUMBER, -1e6, 1e6) for k in (
        "idle_w", "busy_w", "energy_per_inference_mj", "energy_above_idle_mj")),
    ("accuracy.samples", (int,), 0, 10**9),
    *(p for key in ("task", "host_task") for p in (
        (f"accuracy.{key}", (dict,), None, None), (f"accuracy.{key}.metric", (str,), None, None),
        (f"accuracy.{key}.value", _NUMBER, -1e15, 1e15))),
    ("accuracy.agreement", (dict,), None, None),
    ("accuracy.agreement.exact_match_rate", _NUMBER, 0, 1),
    ("accuracy.agreement.max_abs_diff_lsb", _NUMBER, 0, 1e12),
    ("accuracy.agreement.cosine", _NUMBER, -1.0001, 1.0001),
)


def check_result(message: dict[str, Any]) -> dict[str, Any]:
    """Check a result payload field by field (the collector stores only what passes; the agent
    spools only what passes): types and ranges of every stored field, finite numbers, sizes."""
    checked = _check_fields("result", message, RESULT_FIELDS)
    check_bounded("result", message)
    if not SHA256_HEX.match(str(checked["model"].get("sha256", ""))):
        raise ProtocolError("result: 'model.sha256' must be a 64-hex-digit sha256")
    if checked["ts"] > 1e11:
        raise ProtocolError(f"result: 'ts' = {checked['ts']} is not a Unix time")
    for path, kinds, low, high in RESULT_PATHS:
        _check_path(message, path, kinds, low, high)
    samples = ((message.get("latency") or {}).get("samples_ms")) or []
    if not all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in samples):
        raise ProtocolError("result: 'latency.samples_ms' must hold numbers only")
    if not all(isinstance(e, str) for e in checked["errors"]):
        raise ProtocolError("result: 'errors' must be a list of strings")
    return checked


def _check_path(message: dict[str, Any], path: str, kinds: tuple[type, ...], low: float | None,
                high: float | None) -> None:
    value: Any = message
    for part in path.split("."):
        if value is None:
            return
        if not isinstance(value, dict):
            raise ProtocolError(f"result: '{path}' sits in a {type(value).__name__}, "
                                "expected an object")
        value = value.get(part)
    if value is None:
        return
    Field(kinds, low=low, high=high).check("result", path, value)


def check_bounded(where: str, value: Any) -> None:
    """Every string, list, object and number in `value` within the protocol's sizes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > MAX_STRING:
                raise ProtocolError(f"{where}: a string of {len(item):,} characters (max {MAX_STRING})")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ProtocolError(f"{where}: {item!r} is not a finite number")
        elif isinstance(item, dict):
            if len(item) > 256 or any(not isinstance(k, str) or len(k) > 128 for k in item):
                raise ProtocolError(f"{where}: an object with {len(item)} keys or a long key")
            stack.extend(item.values())
        elif isinstance(item, list):
            if len(item) > MAX_LIST:
                raise ProtocolError(f"{where}: a list of {len(item):,} items (max {MAX_LIST})")
            stack.extend(item)


def finite_or_null(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """`value` with every NaN/Infinity replaced by None, and the paths that were replaced (a
    device result must stay JSON even when its data produced a NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path or "value"]
    if isinstance(value, dict):
        out, bad = {}, []
        for key, item in value.items():
            out[key], more = finite_or_null(item, f"{path}.{key}" if path else str(key))
            bad += more
        return out, bad
    if isinstance(value, list):
        pairs = [finite_or_null(item, f"{path}[{k}]") for k, item in enumerate(value)]
        return [p[0] for p in pairs], [b for p in pairs for b in p[1]]
    return value, []


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
