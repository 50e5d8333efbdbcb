"""Models on the device: extracted bundles, an `active` and a `previous` link switched
atomically, so a failed deploy never leaves the device without its working model.

    DATA_DIR/models/<bundle sha256>/   extracted bundles (only active and previous are kept)
    DATA_DIR/active -> models/<sha>    what benchmark/evaluate run
    DATA_DIR/previous -> models/<sha>  the model before it (rollback target)
    DATA_DIR/incoming/                 transfers in progress and staging directories
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .bundle import Bundle


class ModelStore:
    """The device's model directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.models = self.root / "models"
        self.incoming = self.root / "incoming"
        for d in (self.models, self.incoming):
            d.mkdir(parents=True, exist_ok=True)
        self.clear_incoming()

    def clear_incoming(self) -> None:
        """Remove leftovers of transfers an earlier run did not finish."""
        for leftover in self.incoming.iterdir():
            _remove(leftover)

    def _link(self, name: str) -> Path | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        target = (self.root / os.readlink(link)).resolve()
        return target if target.is_dir() else None

    def active(self) -> Bundle | None:
        """The active bundle, or None before the first deploy."""
        target = self._link("active")
        return Bundle.load(target) if target else None

    def previous(self) -> Bundle | None:
        target = self._link("previous")
        return Bundle.load(target) if target else None

    def install(self, staged: Path, bundle_sha256: str) -> Path:
        """Move a checked staging directory to models/<sha> (replacing an identical copy)."""
        final = self.models / bundle_sha256
        if final.exists():
            _remove(final)
        os.replace(staged, final)
        return final

    def activate(self, directory: Path) -> None:
        """Point `active` at `directory` (atomic rename of a symlink); the old one becomes
        `previous`; bundles that are neither are deleted."""
        old = self._link("active")
        _point(self.root / "active", directory, self.root)
        if old is not None and old != directory.resolve():
            _point(self.root / "previous", old, self.root)
        self.prune()

    def rollback(self) -> Bundle:
        """Swap active and previous; raises LookupError when there is no previous model."""
        old_active, old_previous = self._link("active"), self._link("previous")
        if old_previous is None or old_active is None:
            raise LookupError("no previous model to roll back to")
        _point(self.root / "active", old_previous, self.root)
        _point(self.root / "previous", old_active, self.root)
        return Bundle.load(old_previous)

    def prune(self) -> None:
        keep = {p for p in (self._link("active"), self._link("previous")) if p}
        for d in self.models.iterdir():
            if d.resolve() not in keep:
                _remove(d)


def _point(link: Path, target: Path, root: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target.resolve(), root.resolve()), tmp)
    os.replace(tmp, link)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
