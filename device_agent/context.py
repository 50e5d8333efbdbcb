"""What the agent's parts (receiver, outbox, measurement) need from the agent around them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from .protocol import Command
from .runtimes import Runtime
from .store import ModelStore


class AgentContext(Protocol):
    """The small surface the agent gives its parts: who it is, where models live, which runtime
    it uses, and how to tell the host (events, the retained status, the busy marker)."""

    device: str
    store: ModelStore
    runtime_name: str

    def event(self, cmd_id: str | None, level: str, state: str | None, message: str,
              **details: Any) -> None:
        """Publish an event about a command (or the agent, when `cmd_id` is None)."""

    def publish_status(self) -> None:
        """Publish the retained status (model, busy command, spool) now."""

    def set_busy(self, cmd: Command | None) -> None:
        """Mark `cmd` as the command running now (None: idle) and publish the status."""

    def open_runtime(self, model: bytes, threads: int) -> Runtime:
        """The model loaded in this agent's runtime (on a bridged phone: run there)."""

    def check_model(self, bundle_dir: Path) -> str | None:
        """None when the model in `bundle_dir` loads and invokes in this agent's runtime (in a
        child process; on a bridged phone: on the phone), else why not."""
