"""Run float and quantised models on the same data and compare them (SQNR, cosine, task metric)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_agent.runtimes import LiteRTRuntime, dequantize, quantize

from .capture import captured_output
from .data import Dataset
from .progress import progress


@dataclass
class Outputs:
    """Every output of a model over a dataset: float values and, for a quantised model, raw."""

    values: list[np.ndarray]  # per output, (N, ...) float32
    raw: list[np.ndarray] = field(default_factory=list)  # per output, (N, ...) model dtype
    raw_inputs: list[list[np.ndarray]] = field(default_factory=list)  # per sample, per input


def run_model(tflite: bytes, data: Dataset, show_progress: bool = False,
              label: str = "evaluating") -> Outputs:
    """Quantise inputs as the model expects, invoke LiteRT per sample, dequantise outputs."""
    with captured_output("LiteRT"):
        rt = LiteRTRuntime(tflite)
    with rt:
        in_specs, out_specs = rt.inputs(), rt.outputs()
        raw_inputs, raw_outputs = [], []
        for k in progress(range(len(data)), label, show_progress):
            sample = [quantize(x, spec) for x, spec in zip(data.sample(k), in_specs)]
            raw_inputs.append(sample)
            raw_outputs.append(rt.infer(sample))
    raw = [np.concatenate([r[i] for r in raw_outputs]) for i in range(len(out_specs))]
    values = [dequantize(r, spec) for r, spec in zip(raw, out_specs)]
    return Outputs(values, raw, raw_inputs)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64).ravel()
    noise = float(np.sum((ref - test.astype(np.float64).ravel()) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(a64 @ b64 / denom) if denom else 1.0


def task_metric(values: np.ndarray, y: np.ndarray | None) -> dict[str, Any] | None:
    """Accuracy (int labels, argmax of output 0) or RMSE (float targets)."""
    if y is None:
        return None
    if np.issubdtype(y.dtype, np.integer):
        pred = values.reshape(len(y), -1).argmax(axis=1)
        return {"metric": "accuracy", "value": float(np.mean(pred == y.ravel()))}
    pred = values.reshape(len(y), -1)
    err = pred - y.reshape(len(y), -1).astype(np.float64)
    return {"metric": "rmse", "value": float(np.sqrt(np.mean(err**2)))}


def compare(reference: Outputs, test: Outputs, names: list[str],
            y: np.ndarray | None) -> dict[str, Any]:
    """Per-output SQNR and cosine of `test` vs `reference`, plus both task metrics."""
    per_output = [
        {"name": name, "sqnr_db": finite_db(sqnr_db(r, t)), "cosine": cosine(r, t)}
        for name, r, t in zip(names, reference.values, test.values)
    ]
    return {
        "outputs": per_output,
        "sqnr_db": min(o["sqnr_db"] for o in per_output),
        "task": task_metric(test.values[0], y),
        "float_task": task_metric(reference.values[0], y),
    }


def finite_db(x: float) -> float:
    """JSON has no inf: cap identical outputs at 200 dB."""
    return min(x, 200.0)
