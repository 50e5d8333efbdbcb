"""What this device has authorised: the highest statement sequence it accepted and the command
ids it has taken, kept on disk, so neither a replayed deploy or rollback nor a command the
broker delivers again after a restart can run twice.

A statement (signing.authorize) is accepted only if it is signed by the trusted key, names this
device, has not expired, was not issued in the future, and its `seq` is above every sequence
accepted before.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .errors import AgentError
from .signing import SignatureError, key_id, verify_statement

log = logging.getLogger("edgeq.agent")
STATE = "state.json"
MAX_SEEN = 1000  # command ids remembered
CLOCK_SKEW_S = 300.0  # how far in the future a statement may claim to be issued
MAX_LIFETIME_S = 7 * 86400.0  # a statement valid for longer is refused


class NotAuthorized(AgentError, ValueError):
    """A statement is not acceptable; the text says why (for the device's rejection event)."""


class Authority:
    """The trusted key plus the persisted sequence and seen command ids of one device."""

    def __init__(self, data_dir: Path, public_key: Any, device: str) -> None:
        self.path = Path(data_dir) / STATE
        self.public_key = public_key
        self.key_id = key_id(public_key)
        self.device = device
        self.seq, self.seen = self._load()

    def _load(self) -> tuple[int, OrderedDict[str, None]]:
        if not self.path.exists():
            return 0, OrderedDict()
        try:
            state = json.loads(self.path.read_text())
            seq, seen = int(state["seq"]), [str(c) for c in state["seen"]][-MAX_SEEN:]
            return seq, OrderedDict.fromkeys(seen)
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Never fall back to 0 (that would reopen every replay): only statements issued
            # within their maximum lifetime can still be valid, and their seq are ms times.
            floor = int((time.time() - MAX_LIFETIME_S) * 1000)
            log.error("%s is unreadable (%s); accepting only statements newer than %d", self.path,
                      e, floor)
            return floor, OrderedDict()

    def _save(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"seq": self.seq, "seen": list(self.seen)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def check(self, statement: dict[str, Any], kind: str) -> None:
        """Raise NotAuthorized unless `statement` may be acted on now (nothing is recorded)."""
        signer = statement.get("key_id")
        if signer != self.key_id:
            raise NotAuthorized(f"signed by key {str(signer)[:16]!r}; this device trusts key "
                                f"{self.key_id}")
        try:
            verify_statement(self.public_key, statement)
        except SignatureError as e:
            raise NotAuthorized(str(e)) from None
        if statement.get("kind") != kind:
            raise NotAuthorized(f"a signed {statement.get('kind')!r} statement, not a {kind}")
        if statement.get("target") != self.device:
            raise NotAuthorized(f"signed for device {str(statement.get('target'))[:64]!r}, not "
                                f"for {self.device!r}")
        self._check_times(statement)
        seq = statement.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= self.seq:
            raise NotAuthorized(f"sequence {seq} is not newer than {self.seq}, the last this "
                                "device accepted: a replayed or outdated statement")

    def _check_times(self, statement: dict[str, Any]) -> None:
        issued, expires, now = statement.get("issued"), statement.get("expires"), time.time()
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                   for t in (issued, expires)):
            raise NotAuthorized("issued/expires must be Unix times")
        issued, expires = float(issued), float(expires)  # type: ignore[arg-type]
        if expires < now:
            raise NotAuthorized(f"expired {now - expires:.0f} s ago")
        if issued > now + CLOCK_SKEW_S:
            raise NotAuthorized(f"issued {issued - now:.0f} s in the future (check the clocks)")
        if expires - issued > MAX_LIFETIME_S:
            raise NotAuthorized(f"valid for {expires - issued:.0f} s, more than the "
                                f"{MAX_LIFETIME_S:.0f} s allowed")

    def accept(self, seq: int) -> None:
        """Record `seq` as the newest accepted statement (persisted before anything acts on it)."""
        self.seq = max(self.seq, seq)
        self._save()

    def taken(self, cmd_id: str) -> bool:
        """Whether this command id already ran here (also before a restart)."""
        return cmd_id in self.seen

    def take(self, cmd_id: str) -> None:
        """Remember `cmd_id` (the last MAX_SEEN ids are kept)."""
        self.seen[cmd_id] = None
        while len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)
        self._save()
