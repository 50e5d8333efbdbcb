"""Kernel truth: does an op type really run with int16 activations in LiteRT AND TFLite Micro?

Learnt by invoking a quantised model in both interpreters (TFLM in a child process, which a
missing kernel or a bad arena can crash) and cached per op type and runtime versions, so the
check costs once per machine. Never trusts a list.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device_agent.runtimes import LiteRTRuntime, default_tflm_arena, quantize
from device_agent.tflm_child import run_tflm
from edgeq.capture import captured_output
from edgeq.fsutil import write_atomic

log = logging.getLogger("edgeq")


@dataclass(frozen=True)
class InvokeCheck:
    """Whether a model loads and invokes in both runtimes, and why not."""

    litert_error: str = ""
    tflm_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.litert_error and not self.tflm_error

    @property
    def message(self) -> str:
        parts = [f"LiteRT: {self.litert_error}" if self.litert_error else "",
                 f"TFLM: {self.tflm_error}" if self.tflm_error else ""]
        return "; ".join(p for p in parts if p)


def invoke_check(model: bytes, sample: list[np.ndarray]) -> InvokeCheck:
    """Load and invoke `model` on one float sample in LiteRT (here) and TFLM (child process)."""
    try:
        with captured_output("LiteRT"), LiteRTRuntime(model) as rt:
            raw = [quantize(x, s) for x, s in zip(sample, rt.inputs())]
            rt.infer(raw)
    except (RuntimeError, ValueError) as e:
        return InvokeCheck(litert_error=" ".join(str(e).split())[:200])
    run = run_tflm(model, [raw], default_tflm_arena(len(model)))
    return InvokeCheck(tflm_error=run.error if not run.ok else "")


def _versions_key() -> str:
    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "none"
    return f"ai-edge-litert={v('ai-edge-litert')};tflite-micro={v('tflite-micro')};" \
           f"litert-quantizer={v('litert-quantizer')}"


def cache_path() -> Path:
    """Where learnt kernel support is kept (EDGEQ_CACHE_DIR overrides ~/.cache/edgeq)."""
    root = Path(os.environ.get("EDGEQ_CACHE_DIR", Path.home() / ".cache" / "edgeq"))
    return root / "int16_kernels.json"


class KernelCache:
    """op type -> {"int16": bool, "why": str}, per set of runtime versions, on disk."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        self.key = _versions_key()
        self._all = self._read()
        self.known: dict[str, dict[str, object]] = self._all.setdefault(self.key, {})

    def _read(self) -> dict[str, dict[str, dict[str, object]]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, op_type: str) -> bool | None:
        entry = self.known.get(op_type)
        return None if entry is None else bool(entry["int16"])

    def why(self, op_type: str) -> str:
        return str(self.known.get(op_type, {}).get("why", ""))

    def record(self, op_type: str, supported: bool, why: str = "") -> None:
        self.known[op_type] = {"int16": supported, "why": why}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self._all, indent=1, sort_keys=True))
        except OSError as e:  # a read-only home must not break conversion
            log.debug("cannot write kernel cache %s: %s", self.path, e)
