"""The smallest TFLite Micro tensor arena a model allocates and invokes in, found by bisection.

TFLM's Python interpreter has no `arena_used_bytes()`, a slightly small arena raises, and a far
too small one can SEGFAULT the process (seen at 5 KB for a 38 KB model). So the search runs in a
child process that logs each probe before trying it; when the child dies, the parent marks that
size as failing and starts a new child with the narrowed bounds.

Child usage: python -m edgeq.micro.arena WORKDIR
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device_agent.child import last_line, run_child
from device_agent.tflm_child import tflm_log_summary
from edgeq.errors import ModelError

ALIGN = 16
MAX_RESTARTS = 8
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


@dataclass(frozen=True)
class ArenaSize:
    """Measured arena: the smallest size that works and the allocator's own report."""

    smallest_bytes: int  # smallest multiple of 16 that allocates and invokes
    reported_bytes: int  # "Arena allocation total" printed by TFLM's recording allocator
    probes: int
    restarts: int  # children that crashed on a far-too-small arena


def measure_arena(model: bytes, sample: Sequence[np.ndarray], timeout_s: float = 120.0) -> ArenaSize:
    """Bisect the arena size on one (raw, quantised) input sample; raises ModelError when the
    model does not run in TFLM at any size."""
    with tempfile.TemporaryDirectory(prefix="edgeq-arena-") as tmp:
        work = Path(tmp)
        (work / "model.tflite").write_bytes(bytes(model))
        np.savez(work / "sample.npz", *[np.asarray(x) for x in sample])
        lo, hi, reported, probes, restarts = 0, 0, 0, 0, 0
        while True:
            (work / "bounds.txt").write_text(f"{lo} {hi}")
            child = run_child("edgeq.micro.arena", [str(work)], timeout_s)
            if child.timed_out or child.start_error:
                raise ModelError(f"TFLite Micro arena search: "
                                 f"{child.failure('arena probe', timeout_s)}")
            log = _read_log(work)
            probes += len(log)
            for size, status in log:
                if status == "ok":
                    hi = size if not hi else min(hi, size)
                elif status in ("fail", "try"):  # "try" without a result: it crashed there
                    lo = max(lo, size)
            if (work / "reported.txt").exists():
                reported = int((work / "reported.txt").read_text())
            if (work / "error.txt").exists():
                log_lines = tflm_log_summary(child.stderr)
                raise ModelError(f"TFLite Micro cannot run the model: {(work / 'error.txt').read_text()}"
                                 + (f" ({log_lines})" if log_lines else ""))
            if child.returncode == 0 and (work / "done.txt").exists():
                return ArenaSize(hi, reported, probes, restarts)
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise ModelError(f"TFLite Micro arena search crashed {restarts} times "
                                 f"(last bounds {lo}..{hi} bytes): {last_line(child.stderr)}")


def _read_log(work: Path) -> list[tuple[int, str]]:
    path = work / "probes.txt"
    if not path.exists():
        return []
    entries = [line.split() for line in path.read_text().splitlines() if line.strip()]
    path.unlink()
    done = {int(s) for s, status in entries if status != "try"}
    return [(int(s), status) for s, status in entries if status != "try" or int(s) not in done]


def _round_up(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _child_main(work: Path) -> int:
    from tflite_micro.python.tflite_micro import runtime

    model = (work / "model.tflite").read_bytes()
    with np.load(work / "sample.npz") as data:
        sample = [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    lo, hi = (int(v) for v in (work / "bounds.txt").read_text().split())
    log = open(work / "probes.txt", "a")  # noqa: SIM115 - kept open and flushed per probe

    def works(size: int) -> bool:
        log.write(f"{size} try\n")
        log.flush()
        os.fsync(log.fileno())
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=size)
            for i, x in enumerate(sample):
                interp.set_input(x, i)
            interp.invoke()
            ok = True
        except (RuntimeError, ValueError):
            ok = False
        log.write(f"{size} {'ok' if ok else 'fail'}\n")
        log.flush()
        return ok

    if not hi:
        try:
            reported = _reported_total(runtime, model, sample)
        except (RuntimeError, ValueError) as e:
            (work / "error.txt").write_text(" ".join(str(e).split()) or type(e).__name__)
            return 0
        (work / "reported.txt").write_text(str(reported))
        hi = _round_up(max(reported, 2 * lo, ALIGN))
        while not works(hi):
            lo, hi = hi, hi * 2
            if hi > 1 << 31:
                (work / "error.txt").write_text("no arena up to 2 GiB works")
                return 0
    while hi - lo > ALIGN:
        mid = _round_up((lo + hi) // 2)
        if mid >= hi:
            break
        if works(mid):
            hi = mid
        else:
            lo = mid
    (work / "done.txt").write_text(str(hi))
    return 0


def _reported_total(runtime, model: bytes, sample: list[np.ndarray]) -> int:
    """Invoke with a generous arena and read the recording allocator's total from its log."""
    interp = runtime.Interpreter.from_bytes(model, arena_size=max(10 * len(model), 1 << 20))
    for i, x in enumerate(sample):
        interp.set_input(x, i)
    interp.invoke()
    with tempfile.TemporaryFile(mode="w+") as capture:
        sys.stderr.flush()
        saved = os.dup(2)  # TFLM logs to stderr
        os.dup2(capture.fileno(), 2)
        try:
            interp.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        match = _TOTAL.search(capture.read())
    return int(match.group(1)) if match else 0


if __name__ == "__main__":
    sys.exit(_child_main(Path(sys.argv[1])))
