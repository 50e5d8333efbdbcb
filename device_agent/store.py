"""Models on the device: extracted bundles, an `active` and a `previous` link switched
atomically, so a failed deploy (or a crash or power loss at any point of one) never leaves the
device without a working model or without its rollback target.

    DATA_DIR/models/<bundle sha256>/   extracted bundles (only active and previous are kept)
    DATA_DIR/active -> models/<sha>    what benchmark/evaluate run
    DATA_DIR/previous -> models/<sha>  the model before it (rollback target)
    DATA_DIR/incoming/                 transfers in progress and staging directories

Every switch is a symlink renamed over the old one, after the files and directories it points
to are fsynced. A switch first records where it is going (`pending`), then points `previous` at
the old active model, then `active` at the new one, then drops `pending`; after a crash at any
step, `recover()` finishes it (roll forward), so `active` and `previous` are never lost and never
the same model. A rollback is the same switch towards `previous`. A directory that a link points
to is never deleted. `EDGEQ_CRASH_AT=<point>` kills the process at that point (tests).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

from .bundle import Bundle, fsync_dir

log = logging.getLogger("edgeq.agent")
CRASH_POINTS = ("install", "pending-link", "previous-link", "active-link", "pending-unlink",
                "prune")


class ModelStore:
    """The device's model directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.models = self.root / "models"
        self.incoming = self.root / "incoming"
        for d in (self.models, self.incoming):
            d.mkdir(parents=True, exist_ok=True)
        self.recover()

    def recover(self) -> None:
        """After a crash: finish an interrupted switch, drop unfinished transfers, half-made
        links and unreferenced bundles."""
        for leftover in self.incoming.iterdir():
            _remove(leftover)
        for link in self.root.glob(".*.tmp-*"):
            _remove(link)
        pending = self._link("pending")
        if pending is not None:
            log.warning("finishing a model switch to %s interrupted by a crash", pending.name)
            self._switch(pending)
        (self.root / "pending").unlink(missing_ok=True)
        self.prune()

    def _link(self, name: str) -> Path | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        target = (self.root / os.readlink(link)).resolve()
        return target if target.is_dir() else None

    def _bundle(self, name: str) -> Bundle | None:
        target = self._link(name)
        if target is None:
            return None
        try:
            return Bundle.load(target)
        except (OSError, ValueError) as e:  # disk corruption: report, do not crash the agent
            log.error("%s model in %s is unreadable: %s", name, target, e)
            return None

    def active(self) -> Bundle | None:
        """The active bundle, or None before the first deploy."""
        return self._bundle("active")

    def previous(self) -> Bundle | None:
        """The rollback target, or None."""
        return self._bundle("previous")

    def install(self, staged: Path, bundle_sha256: str) -> Path:
        """Move a checked, fsynced staging directory to models/<sha>. A bundle with this sha is
        byte-identical: if one is there already (re-deploying the active model), it is kept
        and the staging copy dropped, so the active model's directory is never touched."""
        final = self.models / bundle_sha256
        if final.exists():
            _remove(staged)
            return final
        _crash_point("install")
        os.replace(staged, final)
        fsync_dir(self.models)
        return final

    def activate(self, directory: Path) -> None:
        """Point `active` at `directory`; the old active model becomes `previous`."""
        _crash_point("pending-link")
        _point(self.root / "pending", directory, self.root)
        self._switch(directory.resolve())
        _crash_point("pending-unlink")
        (self.root / "pending").unlink(missing_ok=True)
        fsync_dir(self.root)
        _crash_point("prune")
        self.prune()

    def _switch(self, target: Path) -> None:
        """previous := active (unless active is already `target`), then active := target."""
        old = self._link("active")
        if old is not None and old != target:
            _crash_point("previous-link")
            _point(self.root / "previous", old, self.root)
        _crash_point("active-link")
        _point(self.root / "active", target, self.root)

    def rollback(self) -> Bundle:
        """Swap active and previous; raises LookupError when there is no previous model."""
        old_previous = self._link("previous")
        if old_previous is None or self._link("active") is None:
            raise LookupError("no previous model to roll back to")
        self.activate(old_previous)
        return Bundle.load(old_previous)

    def prune(self) -> None:
        """Delete bundles that no link points to."""
        keep = {p for p in (self._link(n) for n in ("active", "previous", "pending")) if p}
        for d in self.models.iterdir():
            if d.resolve() not in keep:
                _remove(d)


def _point(link: Path, target: Path, root: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target.resolve(), root.resolve()), tmp)
    os.replace(tmp, link)
    fsync_dir(root)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _crash_point(name: str) -> None:
    """Crash injection for the store's tests: SIGKILL ourselves where EDGEQ_CRASH_AT names."""
    if os.environ.get("EDGEQ_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
