"""The deploy and rollback state machine: a signed manifest, chunks into a reserved file, checks
(sha256, bundle, load-and-invoke in a child process), then an atomic switch. Any failure leaves
the active model untouched and is answered with a `rejected` event."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .authority import Authority, NotAuthorized
from .bundle import Bundle, BundleError, extract_bundle
from .context import AgentContext
from .errors import AgentError
from .protocol import Command, signed_part
from .signing import sha256_file

log = logging.getLogger("edgeq.agent")


@dataclass(frozen=True)
class ReceiverLimits:
    """How much a deploy may take of this device: bytes, and time."""

    data_dir: Path
    max_bundle_bytes: int
    transfer_timeout_s: float  # no chunk for this long: abort
    transfer_deadline_s: float  # a whole transfer, however it trickles


@dataclass
class Transfer:
    """A deploy whose chunks are arriving."""

    cmd_id: str
    manifest: dict[str, Any]
    path: Path
    file: BinaryIO
    received: set[int] = field(default_factory=set)
    last_activity: float = field(default_factory=time.monotonic)
    deadline: float = float("inf")  # time.monotonic() by which every chunk must be in


class Rejected(AgentError):
    """A deploy is refused; the message says why (the active model is unchanged)."""


class Receiver:
    """Deploys (at most one receiving at a time) and rollbacks of one device."""

    def __init__(self, agent: AgentContext, authority: Authority, limits: ReceiverLimits) -> None:
        self.agent = agent
        self.store = agent.store
        self.authority = authority
        self.limits = limits
        self.transfer: Transfer | None = None

    def deploy(self, cmd: Command) -> None:
        """Accept a signed manifest and get ready for its chunks (or reject it)."""
        manifest = cmd.args["manifest"]
        try:
            self._accept(cmd.id, manifest)
            path = self.store.incoming / f"{cmd.id}.part"
            f = _reserved_file(path, manifest["size"])
        except Rejected as e:
            self._reject(cmd.id, str(e))
            return
        deadline = min(time.monotonic() + self.limits.transfer_deadline_s,
                       time.monotonic() + max(0.0, manifest["expires"] - time.time()))
        self.transfer = Transfer(cmd.id, manifest, path, f, deadline=deadline)
        self.agent.set_busy(cmd)
        log.info("deploy %s: receiving %s (%d bytes in %d chunks)", cmd.id, manifest["name"],
                 manifest["size"], manifest["chunks"])
        self.agent.event(cmd.id, "info", "ready", f"send {manifest['chunks']} chunks")

    def _accept(self, cmd_id: str, manifest: dict[str, Any]) -> None:
        """Everything that can be refused before a single chunk is sent. A newer signed deploy
        pre-empts one still receiving (a replayed or stalled one cannot hold the device)."""
        try:
            self.authority.check(signed_part(manifest), "deploy")
        except NotAuthorized as e:
            raise Rejected(str(e)) from None
        if manifest["size"] > self.limits.max_bundle_bytes:
            raise Rejected(f"bundle is {manifest['size']:,} bytes, over this device's limit of "
                           f"{self.limits.max_bundle_bytes:,} bytes (--max-bundle-mb)")
        free = shutil.disk_usage(self.limits.data_dir).free
        if free < 3 * manifest["size"]:
            raise Rejected(f"only {free:,} bytes free in {self.limits.data_dir}; need "
                           f"{3 * manifest['size']:,}")
        self.authority.accept(manifest["seq"])
        if self.transfer is not None:
            self._abort(f"pre-empted by the newer signed deploy {cmd_id}")

    def _reject(self, cmd_id: str, why: str) -> None:
        active = self.store.active()
        kept = f"{active.name} ({active.model_sha256[:12]})" if active else "none"
        log.warning("deploy %s rejected: %s", cmd_id, why)
        self.agent.event(cmd_id, "error", "rejected", f"{why}; active model unchanged: {kept}")

    def on_chunk(self, deploy_id: str, index: int, payload: bytes) -> None:
        """Write one chunk of the transfer in progress; the last one finishes the deploy."""
        t = self.transfer
        if t is None or deploy_id != t.cmd_id:
            log.debug("ignoring chunk %d of deploy %s (not receiving it)", index, deploy_id)
            return
        m = t.manifest
        expected = min(m["chunk_size"], m["size"] - index * m["chunk_size"])
        if index >= m["chunks"] or len(payload) != expected:
            self._abort(f"chunk {index} has {len(payload)} bytes; expected {max(expected, 0)} "
                        f"(of {m['chunks']} chunks)")
            return
        try:
            t.file.seek(index * m["chunk_size"])
            t.file.write(payload)
        except OSError as e:
            self._abort(f"cannot write chunk {index}: {e.strerror or e}")
            return
        t.received.add(index)
        t.last_activity = time.monotonic()
        if len(t.received) == m["chunks"]:
            self._finish()

    def _abort(self, why: str) -> None:
        t = self.transfer
        assert t is not None
        self.transfer = None
        self.agent.set_busy(None)
        with contextlib.suppress(OSError):
            t.file.close()
        t.path.unlink(missing_ok=True)
        self._reject(t.cmd_id, why)

    def check_timeout(self) -> None:
        """The timer: abort a transfer that stalled or missed its deadline."""
        t = self.transfer
        if t and time.monotonic() - t.last_activity > self.limits.transfer_timeout_s:
            self._abort(f"transfer stalled for {self.limits.transfer_timeout_s:.0f} s after "
                        f"{len(t.received)} of {t.manifest['chunks']} chunks")
        elif t and time.monotonic() > t.deadline:
            self._abort(f"transfer not complete by its deadline ({len(t.received)} of "
                        f"{t.manifest['chunks']} chunks)")

    def _finish(self) -> None:
        t = self.transfer
        assert t is not None
        self.transfer = None
        staging = self.store.incoming / f"{t.cmd_id}.staging"
        try:
            t.file.flush()
            os.fsync(t.file.fileno())
            t.file.close()
            bundle = self._check_received(t, staging)
            final = self.store.install(staging, t.manifest["sha256"])
            self.store.activate(final)
        except Rejected as e:
            self._reject(t.cmd_id, str(e))
            self.agent.set_busy(None)
            return
        except OSError as e:  # a full disk while installing: the old model stays active
            self._reject(t.cmd_id, f"cannot install the model: {e.strerror or e}")
            self.agent.set_busy(None)
            return
        finally:
            t.path.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        log.info("deploy %s: activated %s (%s)", t.cmd_id, bundle.name, bundle.model_sha256[:12])
        self._activated(t.cmd_id, f"activated {bundle.name}")

    def _activated(self, cmd_id: str, message: str) -> None:
        # The retained status first: whoever sees `activated` then reads the new model (and
        # the kept previous one) in the status, never the one from before the switch.
        self.agent.set_busy(None)
        self.agent.event(cmd_id, "info", "activated", message,
                         model=model_info(self.store.active()), runtime=self.agent.runtime_name)

    def _check_received(self, t: Transfer, staging: Path) -> Bundle:
        sha = sha256_file(t.path)
        if sha != t.manifest["sha256"]:
            raise Rejected(f"received bundle has sha256 {sha[:12]}..., the signed manifest says "
                           f"{t.manifest['sha256'][:12]}... (corrupted in transfer)")
        self.agent.event(t.cmd_id, "info", "received", f"{t.manifest['size']:,} bytes, sha256 "
                                                       "and signature verified; checking the model")
        try:
            bundle = extract_bundle(t.path, staging)
        except BundleError as e:
            raise Rejected(str(e)) from None
        if bundle.model_sha256 != t.manifest["model_sha256"]:
            raise Rejected("model sha256 in the bundle differs from the manifest's")
        why = self.agent.check_model(staging)
        if why is not None:
            raise Rejected(f"model does not load and invoke in {self.agent.runtime_name}: {why}")
        return Bundle(self.store.models / t.manifest["sha256"], bundle.meta)

    def rollback(self, cmd: Command) -> None:
        """Make the previous model active again, after the same load check as a deploy; the
        command must carry a statement signed for this device naming that model."""
        previous = self.store.previous()
        authorization = cmd.args["authorization"]
        try:
            self.authority.check(authorization, "rollback")
        except NotAuthorized as e:
            self._reject(cmd.id, str(e))
            return
        if self.transfer is not None or previous is None:
            self._reject(cmd.id, "busy: a deploy is receiving" if self.transfer else
                         "no previous model to roll back to")
            return
        if authorization["to"] != previous.directory.name:
            self._reject(cmd.id, f"the signed rollback names model {authorization['to'][:12]}, "
                                 f"the kept previous model is {previous.directory.name[:12]}")
            return
        self.authority.accept(authorization["seq"])
        why = self.agent.check_model(previous.directory)
        if why is not None:
            self._reject(cmd.id, f"previous model {previous.name} does not load and invoke in "
                                 f"{self.agent.runtime_name}: {why}")
            return
        self.store.rollback()
        log.info("rollback %s: activated %s (%s)", cmd.id, previous.name, previous.model_sha256[:12])
        self._activated(cmd.id, f"rolled back to {previous.name}")

    def close(self) -> None:
        """The agent stops: close the file of a transfer in progress (its .part is resumable
        by nothing and removed at the next start by the store's recovery)."""
        if self.transfer:
            self.transfer.file.close()


def _reserved_file(path: Path, size: int) -> BinaryIO:
    """The .part file of a transfer with its whole size reserved on disk now, so a full disk is
    a clean rejection before the transfer, not a failure halfway through it."""
    f = open(path, "w+b")  # noqa: SIM115 - closed in _finish/_abort
    try:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except AttributeError:  # no posix_fallocate (macOS): sparse file
            f.truncate(size)
    except OSError as e:
        f.close()
        path.unlink(missing_ok=True)
        raise Rejected(f"cannot reserve {size:,} bytes for the bundle: {e.strerror or e}") from None
    return f


def model_info(bundle: Bundle | None) -> dict[str, Any] | None:
    """A model as the status and events name it."""
    if bundle is None:
        return None
    return {"name": bundle.name, "sha256": bundle.model_sha256,
            "bytes": bundle.meta["model"]["bytes"], "bundle": bundle.directory.name}
