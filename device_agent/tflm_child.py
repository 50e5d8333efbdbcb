"""Run a model in TFLite Micro in a child process: a bad model or arena can SEGFAULT the
interpreter (measured: far-too-small arenas), and that must not take the caller down.

Usage as a program: python -m device_agent.tflm_child WORKDIR
WORKDIR holds model.tflite, inputs.npz (keys in_<i>, leading axis = samples) and arena.txt,
optionally tensors.txt (tensor indices to capture after each invoke); the child writes
outputs.npz (keys out_<i>), tensors.npz (keys t_<index>) or error.txt.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arrays import save_npz
from .child import last_line, run_child


@dataclass
class TFLMRun:
    """Outcome of a child-process TFLM run."""

    ok: bool
    outputs: list[np.ndarray] = field(default_factory=list)  # one array per output, samples first
    error: str = ""
    version: str = ""
    tensors: dict[int, np.ndarray] = field(default_factory=dict)  # index -> (samples, ...)


def run_tflm(model: bytes, samples: Sequence[Sequence[np.ndarray]], arena_size: int,
             timeout_s: float = 120.0, capture: Sequence[int] = ()) -> TFLMRun:
    """Invoke `model` in TFLM on every sample (a list of raw input arrays) in a child process.

    `capture`: tensor indices whose values to return after every invoke (TFLM's
    kPreserveAllTensors keeps intermediates instead of reusing their arena space)."""
    with tempfile.TemporaryDirectory(prefix="edgeq-tflm-") as tmp:
        work = Path(tmp)
        (work / "model.tflite").write_bytes(bytes(model))
        (work / "arena.txt").write_text(str(int(arena_size)))
        if capture:
            (work / "tensors.txt").write_text(" ".join(str(int(i)) for i in capture))
        n_inputs = len(samples[0]) if samples else 0
        save_npz(work / "inputs.npz", {f"in_{i}": np.stack([s[i] for s in samples])
                                       for i in range(n_inputs)})
        child = run_child("device_agent.tflm_child", [str(work)], timeout_s)
        if child.signal is not None:
            return TFLMRun(False, error=f"TFLM crashed with signal {child.signal} "
                                        f"(arena {arena_size} bytes): {last_line(child.stderr)}")
        if child.failure("TFLM run", timeout_s):
            return TFLMRun(False, error=child.failure("TFLM run", timeout_s))
        if (work / "error.txt").exists():
            error = (work / "error.txt").read_text().strip()
            log = tflm_log_summary(child.stderr)
            return TFLMRun(False, error=f"{error} ({log})" if log else error)
        if child.returncode != 0 or not (work / "outputs.npz").exists():
            return TFLMRun(False, error=f"TFLM child failed: {last_line(child.stderr)}")
        with np.load(work / "outputs.npz") as out:
            outputs = [out[f"out_{i}"] for i in range(len(out.files))]
        tensors = {}
        if capture:
            with np.load(work / "tensors.npz") as captured:
                tensors = {int(k[2:]): captured[k] for k in captured.files}
        return TFLMRun(True, outputs, version=(work / "version.txt").read_text(), tensors=tensors)


def tflm_log_summary(text: str, limit: int = 3) -> str:
    """TFLM's own log (e.g. "Didn't find op for builtin opcode 'GELU'"), on one line."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "Warning:" not in line and not line.lstrip().startswith("warn")]
    return "; ".join(lines[:limit])


def _child_main(work: Path) -> int:
    from .runtimes import TFLMRuntime

    model = (work / "model.tflite").read_bytes()
    arena = int((work / "arena.txt").read_text())
    with np.load(work / "inputs.npz") as data:
        inputs = [data[f"in_{i}"] for i in range(len(data.files))]
    capture = [int(i) for i in (work / "tensors.txt").read_text().split()] \
        if (work / "tensors.txt").exists() else []
    captured: dict[int, list[np.ndarray]] = {i: [] for i in capture}
    try:
        runtime = TFLMRuntime(model, arena_size=arena, preserve_all_tensors=bool(capture))
        (work / "version.txt").write_text(runtime.version)
        n = len(inputs[0]) if inputs else 1
        per_sample = []
        for k in range(n):
            per_sample.append(runtime.infer([x[k] for x in inputs]))
            for i in capture:
                captured[i].append(runtime.tensor(i))
    except Exception as e:
        message = " ".join(str(e).split()) or type(e).__name__
        (work / "error.txt").write_text(f"{type(e).__name__}: {message}")
        return 0
    outputs = {f"out_{i}": np.stack([s[i] for s in per_sample]) for i in range(len(per_sample[0]))}
    save_npz(work / "outputs.npz", outputs)
    if capture:
        save_npz(work / "tensors.npz", {f"t_{i}": np.stack(v) for i, v in captured.items()})
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(Path(sys.argv[1])))
