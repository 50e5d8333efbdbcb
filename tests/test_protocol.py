"""Protocol v1: commands are data, checked field by field; topics; results; acks."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.bundle import BundleError, _check_meta
from device_agent.protocol import (
    ProtocolError,
    check_manifest,
    check_result,
    chunk_topic,
    command,
    decode,
    device_of,
    encode,
    parse_ack,
    parse_chunk_topic,
    parse_command,
    shared_results,
    topic,
)

MANIFEST = {"name": "cnn", "size": 10_000, "sha256": "a" * 64, "model_sha256": "b" * 64,
            "chunks": 3, "chunk_size": 4096, "signature": "c2ln", "kind": "deploy",
            "target": "pi-1", "seq": 1, "issued": 1.0, "expires": 2.0, "key_id": "0" * 16}


def test_defaults_are_filled_in_and_the_host_builds_what_the_device_accepts() -> None:
    cmd = parse_command(encode({"id": "b1", "type": "benchmark", "runs": 5}))
    assert cmd.args["runs"] == 5 and cmd.args["warmup"] == 10 and cmd.args["power"] is True
    assert parse_command(encode(command("benchmark", "b1", runs=5).to_dict())) == cmd
    assert parse_command(encode({"id": "p", "type": "ping"})).args == {"expires": 0.0}


@pytest.mark.parametrize("message,error", [
    # (command as sent, expected error text)
    ({"type": "ping"}, "'id' must be"),
    ({"id": "a/b", "type": "ping"}, "'id' must be"),
    ({"id": "x", "type": "exec"}, "unknown type 'exec'"),
    ({"id": "x", "type": "benchmark", "runs": 0}, "outside [1"),
    ({"id": "x", "type": "benchmark", "runs": 2.5}, "must be an integer"),
    ({"id": "x", "type": "benchmark", "runs": True}, "must be an integer"),
    ({"id": "x", "type": "benchmark", "power": "yes"}, "must be true/false"),
    ({"id": "x", "type": "benchmark", "code": "import os"}, "unknown field 'code'"),
    ({"id": "x", "type": "deploy"}, "missing field 'manifest'"),
    ({"id": "x", "type": "deploy", "manifest": {**MANIFEST, "chunks": 2}}, "expected 3"),
    ({"id": "x", "type": "deploy", "manifest": {**MANIFEST, "sha256": "z" * 64}}, "does not match"),
    ({"id": "x", "type": "deploy", "manifest": {**MANIFEST, "name": "../etc"}}, "does not match"),
])
def test_bad_commands_are_refused_naming_the_field(message: dict, error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_command(encode(message))
    assert error in str(info.value)
    if "id" in message and message["id"] == "x":
        assert info.value.cmd_id == "x"  # the error event can name the command


@pytest.mark.parametrize("payload,error", [
    (b"\xff\xfe", "not valid JSON"),
    (b"42", "expected a JSON object"),
    (b"{" + b" " * 70_000 + b"}", "over the 65,536-byte limit"),
])
def test_undecodable_payloads_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_command(payload)


def test_manifest_float_size_is_not_an_integer() -> None:
    with pytest.raises(ProtocolError, match="'size' must be an integer"):
        check_manifest({**MANIFEST, "size": 1e4})


def test_topics_round_trip_and_reject_wildcards() -> None:
    assert topic("pi-1", "status") == "edgeq/v1/pi-1/status"
    assert parse_chunk_topic(chunk_topic("pi-1", "d1", 7)) == ("d1", 7)
    assert parse_chunk_topic(topic("pi-1", "cmd")) is None
    assert device_of("edgeq/v1/pi-1/result") == "pi-1"
    assert shared_results() == "$share/edgeq/edgeq/v1/+/result"
    for bad in ("+", "#", "a/b", "", "_all", "x" * 65):
        with pytest.raises(ProtocolError, match="device id"):
            topic(bad, "cmd")


def result(**changes: object) -> dict:
    r = {"schema_version": 1, "report_id": "r" * 32, "cmd_id": "b1", "type": "benchmark",
         "device": "pi-1", "ts": 1.0, "agent": {}, "arch": "aarch64", "runtime": {},
         "model": {"sha256": "f" * 64}, "latency": None, "power": None, "accuracy": None,
         "errors": []}
    r.update(changes)
    return r


def test_results_are_checked_before_storage() -> None:
    assert check_result(result())["device"] == "pi-1"
    with pytest.raises(ProtocolError, match=r"model.sha256"):
        check_result(result(model={"sha256": "short"}))
    with pytest.raises(ProtocolError, match="'report_id'"):
        check_result(result(report_id="x"))
    with pytest.raises(ProtocolError, match="unknown field 'extra'"):
        check_result(result(extra=1))


def test_acks_carry_report_ids_only() -> None:
    assert parse_ack(encode({"report_ids": ["r" * 32]})) == ["r" * 32]
    with pytest.raises(ProtocolError):
        parse_ack(encode({"report_ids": ["../x"]}))


# -- fuzz: every decoder is total (its own error, never anything else), bounded in time -------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN/Infinity included on purpose


@FUZZ
@given(st.one_of(st.binary(max_size=200), JSON.map(_json_bytes)))
def test_fuzz_command_ack_and_result_decoders_are_total(payload: bytes) -> None:
    for parse in (parse_command, parse_ack, lambda p: check_result(decode(p, "result"))):
        with contextlib.suppress(ProtocolError):
            parse(payload)


@FUZZ
@given(st.dictionaries(st.sampled_from(["id", "type", "runs", "min_seconds", "manifest",
                                        "authorization", "expires", "report_ids"]), JSON))
def test_fuzz_structured_commands_are_total(message: dict) -> None:
    message.setdefault("id", "f1")
    for kind in ("benchmark", "deploy", "rollback", "ping"):
        with contextlib.suppress(ProtocolError):
            parse_command(_json_bytes({**message, "type": kind}))


@FUZZ
@given(st.text(max_size=40), st.text(max_size=12))
def test_fuzz_chunk_topics_are_total(deploy_id: str, index: str) -> None:
    parsed = parse_chunk_topic(f"edgeq/v1/dev/deploy/{deploy_id}/{index}")
    assert parsed is None or (parsed[0] == deploy_id and 0 <= parsed[1] < 10**7)


@FUZZ
@given(JSON)
def test_fuzz_bundle_metadata_checks_are_total(meta: object) -> None:
    with contextlib.suppress(BundleError):
        _check_meta(meta if isinstance(meta, dict) else {"x": meta}, {"bundle.json", "model.tflite"})
