"""`edgeq deploy`: bundle a quantised model with its eval data, the host's reference outputs and
preprocessing contract, sign it, send it to a device in chunks and wait for its verdict."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.bundle import write_bundle
from device_agent.connection import Broker, properties
from device_agent.preprocessing import Contract
from device_agent.protocol import chunk_topic, command
from device_agent.runtimes import LiteRTRuntime
from device_agent.signing import SignatureError, authorize
from edgeq.capture import captured_output
from edgeq.errors import DeviceUnreachable, InputError
from edgeq.fleet.session import HostSession, new_command_id
from edgeq.model.graph import not_integer_note
from edgeq.model.inputs import read_contracts
from edgeq.model.load import read_quantized_tflite
from edgeq.progress import ByteProgress
from edgeq.study.evaluate import quantized_reference

log = logging.getLogger("edgeq")
CHUNK_SIZE = 256 * 1024


@dataclass(frozen=True)
class DeployConfig:
    """Everything `edgeq deploy` needs."""

    model: Path
    device: str
    broker: Broker
    key: Path
    eval: Path | None = None
    eval_samples: int = 0  # 0 = all
    preprocessing: Path | None = None  # default: preprocessing.json beside the model
    name: str | None = None
    chunk_size: int = CHUNK_SIZE
    timeout_s: float = 60.0
    show_progress: bool = True


def build_bundle(cfg: DeployConfig, path: Path) -> dict[str, Any]:
    """Write the bundle for `cfg.model` to `path`; returns its bundle.json."""
    tflite = read_quantized_tflite(cfg.model)
    float_note = not_integer_note(tflite)
    if float_note:
        log.warning("%s: %s", cfg.model, float_note)
    contracts = {c["input"]: Contract.from_dict(c)
                 for c in read_contracts(cfg.model, cfg.preprocessing)}
    name = cfg.name or (cfg.model.parent.name if cfg.model.name == "model.tflite" else cfg.model.stem)
    if cfg.eval is None:
        with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
            inputs, outputs = rt.inputs(), rt.outputs()
        return write_bundle(path, tflite, _bundle_name(name), inputs, outputs,
                            [c.to_dict() for c in contracts.values()])
    ref = quantized_reference(tflite, cfg.eval, contracts, cfg.eval_samples)
    return write_bundle(path, tflite, _bundle_name(name), ref.inputs, ref.outputs,
                        [c.to_dict() for c in contracts.values()], list(ref.data.inputs),
                        ref.data.y, ref.raw_outputs, extra={"source": str(cfg.model)})


def signed_manifest(key: Path, device: str, bundle: bytes, meta: dict[str, Any], chunk_size: int,
                    lifetime_s: float) -> dict[str, Any]:
    """The deploy manifest: a statement signed for `device` (sequence, expiry, key id, bundle
    and model sha256), plus how the bundle travels (chunks)."""
    try:
        statement = authorize(key, "deploy", device, lifetime_s, name=meta["name"],
                              size=len(bundle), sha256=hashlib.sha256(bundle).hexdigest(),
                              model_sha256=meta["model"]["sha256"])
    except SignatureError as e:
        raise InputError(str(e)) from e
    return {**statement, "chunk_size": chunk_size, "chunks": -(-len(bundle) // chunk_size)}


def _bundle_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "_.+-" else "_" for ch in name)[:128]
    return cleaned or "model"


def deploy(cfg: DeployConfig) -> dict[str, Any]:
    """Bundle, sign, send; return the device's verdict. Raises DeviceRefused (exit 1) when the
    device rejects the model and DeviceUnreachable (exit 3) when it does not answer."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeq-deploy-") as tmp:
        bundle_path = Path(tmp) / "bundle.zip"
        meta = build_bundle(cfg, bundle_path)
        data = bundle_path.read_bytes()
    manifest = signed_manifest(cfg.key, cfg.device, data, meta, cfg.chunk_size,
                               lifetime_s=max(300.0, 3 * cfg.timeout_s))
    sha = manifest["sha256"]
    cmd = command("deploy", new_command_id("deploy"), manifest=manifest,
                  expires=round(time.time() + cfg.timeout_s, 3))
    built = time.perf_counter()
    with HostSession(cfg.broker, max_inflight=max(20, manifest["chunks"])) as session:
        session.issue(cfg.device, cmd, cfg.timeout_s)
        session.answer(cfg.device, cmd.id, ("ready",), cfg.timeout_s,
                       f"device '{cfg.device}' to accept the deploy")
        sending = time.perf_counter()
        chunks = publish_chunks(session.client, cfg.device, cmd.id, data, cfg.chunk_size,
                                cfg.timeout_s)
        sent = time.perf_counter()
        _await_received(session, cfg, cmd.id, chunks, len(data))
        transferred = time.perf_counter()
        verdict = session.answer(cfg.device, cmd.id, ("activated",), cfg.timeout_s,
                                 f"device '{cfg.device}' to load the model")
    done = time.perf_counter()
    return {"device": cfg.device, "state": verdict["state"], "message": verdict.get("message"),
            "cmd_id": cmd.id, "model": verdict.get("model"), "runtime": verdict.get("runtime"),
            "bundle": {"bytes": len(data), "sha256": sha, "chunks": manifest["chunks"],
                       "chunk_size": cfg.chunk_size, "eval_samples":
                       (meta.get("eval") or {}).get("samples", 0),
                       "preprocessing": bool(meta["preprocessing"])},
            "seconds": {"bundle": round(built - started, 3),
                        "queue_chunks": round(sent - sending, 3),
                        "transfer": round(transferred - sending, 3),
                        "activate": round(done - transferred, 3),
                        "total": round(done - started, 3)},
            "throughput_mb_s": round(len(data) / 1e6 / max(transferred - sending, 1e-9), 2)}


def publish_chunks(client: Any, device: str, deploy_id: str, data: bytes, chunk_size: int,
                   expiry_s: float) -> list[Any]:
    """Queue every chunk of `data` for `device` (QoS 1, dropped by the broker after `expiry_s`);
    returns their publish handles."""
    expiry = properties("PUBLISH", MessageExpiryInterval=max(1, int(expiry_s)))
    view = memoryview(data)
    return [client.publish(chunk_topic(device, deploy_id, n),
                           bytes(view[n * chunk_size:(n + 1) * chunk_size]), qos=1,
                           properties=expiry)
            for n in range(-(-len(data) // chunk_size))]


def _await_received(session: HostSession, cfg: DeployConfig, deploy_id: str, chunks: list[Any],
                    size: int) -> None:
    """Wait for the device's `received` (the real end of the transfer), showing the broker's
    acknowledgements as progress.

    Waiting for each PUBACK before sending on would add ~40 ms per round trip on brokers that
    leave Nagle on for their small PUBACKs (mosquitto's default, set_tcp_nodelay false).
    """
    bar = ByteProgress(size, f"deploy to {cfg.device}", cfg.show_progress)
    deadline = time.monotonic() + cfg.timeout_s
    try:
        while True:
            try:
                session.answer(cfg.device, deploy_id, ("received",), 0.2, "the transfer")
                return
            except DeviceUnreachable:
                acked = sum(1 for info in chunks if info.is_published())
                bar.set(min(size, acked * cfg.chunk_size))
                if time.monotonic() > deadline:
                    raise DeviceUnreachable(
                        f"timed out after {cfg.timeout_s:.0f} s waiting for device '{cfg.device}' "
                        f"to confirm the transfer; the broker acknowledged {acked} of "
                        f"{len(chunks)} chunks") from None
    finally:
        bar.close()
