"""One way to run a Python module in a child process (TFLM runs, load checks, arena probes):
an interpreter that crashes (a far-too-small TFLM arena SEGFAULTs), hangs or cannot start is
reported to the parent as data, never taken down with it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChildExit:
    """How a child ended: its exit code (negative: killed by that signal) and output."""

    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    start_error: str = ""

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    def failure(self, what: str, timeout_s: float) -> str:
        """One line saying why the child did not finish normally ('' when it did)."""
        if self.start_error:
            return f"cannot start the {what} ({self.start_error})"
        if self.timed_out:
            return f"the {what} timed out after {timeout_s:.0f} s"
        if self.signal is not None:
            return f"the {what} crashed with signal {self.signal}: {last_line(self.stderr)}"
        return ""


def run_child(module: str, args: Sequence[str], timeout_s: float,
              python: Sequence[str] = ()) -> ChildExit:
    """`python -m module *args` (python: this interpreter unless given, e.g. a QEMU wrapper)."""
    argv = [*(python or (sys.executable,)), "-m", module, *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return ChildExit(None, timed_out=True)
    except OSError as e:
        return ChildExit(None, start_error=str(e))
    return ChildExit(proc.returncode, proc.stdout, proc.stderr)


def last_line(text: str) -> str:
    """The last non-empty line of a child's output, or 'no message'."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
