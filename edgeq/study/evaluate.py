"""Run float and quantised models on the same data and compare them (SQNR, cosine, task metric)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.metrics import cosine, finite_db, sqnr_db, task_metric
from device_agent.preprocessing import Contract
from device_agent.runtimes import LiteRTRuntime, TensorSpec, dequantize, quantize
from edgeq.capture import captured_output
from edgeq.errors import ModelError
from edgeq.model.data import Dataset, labels_for, load_dataset
from edgeq.model.flatbuffer import explain_node
from edgeq.progress import progress


@dataclass
class Outputs:
    """Every output of a model over a dataset: float values and, for a quantised model, raw."""

    values: list[np.ndarray]  # per output, (N, ...) float32
    raw: list[np.ndarray] = field(default_factory=list)  # per output, (N, ...) model dtype
    raw_inputs: list[list[np.ndarray]] = field(default_factory=list)  # per sample, per input


def run_model(tflite: bytes, data: Dataset, show_progress: bool = False,
              label: str = "evaluating", xnnpack: bool = False) -> Outputs:
    """Quantise inputs as the model expects, invoke LiteRT per sample, dequantise outputs.
    `xnnpack`: LiteRT's default delegate on every core, for float models (within 1e-6 of the
    builtin kernels and 20-40x faster on a transformer); quantised models are judged on the
    builtin kernels.

    Raises:
        ModelError: LiteRT cannot prepare or invoke the model (one line naming the op)."""
    try:
        with captured_output("LiteRT"):
            rt = LiteRTRuntime(tflite, num_threads=(os.cpu_count() or 1) if xnnpack else 1,
                               use_xnnpack=xnnpack)
        return _run(rt, data, show_progress, label)
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"the {label} does not run in LiteRT: {explain_node(tflite, str(e))}") from e


def _run(rt: LiteRTRuntime, data: Dataset, show_progress: bool, label: str) -> Outputs:
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


def compare(reference: Outputs, test: Outputs, names: list[str],
            y: np.ndarray | None) -> dict[str, Any]:
    """Per-output SQNR and cosine of `test` vs `reference`, plus both task metrics."""
    per_output: list[dict[str, Any]] = [
        {"name": name, "sqnr_db": finite_db(sqnr_db(r, t)), "cosine": cosine(r, t),
         "mean_sample_cosine": mean_sample_cosine(r, t)}
        for name, r, t in zip(names, reference.values, test.values)
    ]
    return {
        "outputs": per_output,
        "sqnr_db": min(float(o["sqnr_db"]) for o in per_output),
        "cosine": min(float(o["mean_sample_cosine"]) for o in per_output),
        "task": task_metric(test.values[0], y),
        "float_task": task_metric(reference.values[0], y),
    }


def mean_sample_cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine of each sample's output to the reference's, averaged over samples (how sentence
    embeddings are judged). Two all-zero samples agree (1.0); one all-zero sample scores 0."""
    r = reference.reshape(len(reference), -1).astype(np.float64)
    t = test.reshape(len(test), -1).astype(np.float64)
    dots = np.sum(r * t, axis=1)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(t, axis=1)
    both_zero = (np.linalg.norm(r, axis=1) == 0) & (np.linalg.norm(t, axis=1) == 0)
    per_sample = np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-300))
    return float(np.mean(per_sample)) if len(per_sample) else 1.0


@dataclass(frozen=True)
class Reference:
    """A quantised model's own I/O on a dataset: what a device running it must reproduce."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    data: Dataset  # float inputs as given, before any preprocessing contract
    raw_inputs: list[np.ndarray]  # per model input, (N, *shape), preprocessed and quantised
    raw_outputs: list[np.ndarray]  # per model output, (N, *shape), LiteRT's raw values


def quantized_reference(tflite: bytes, data_path: Path, contracts: dict[str, Contract],
                        limit: int = 0, reference_kernels: bool = False) -> Reference:
    """Run a quantised model in LiteRT on (at most `limit`) samples of an .npz, applying each
    input's preprocessing contract first, exactly as a device will. `reference_kernels`: LiteRT's
    reference kernels (the arithmetic TFLite Micro implements) instead of its optimized ones."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite, reference_kernels=reference_kernels) as rt:
        inputs, outputs = rt.inputs(), rt.outputs()
        as_float = tuple(dataclasses.replace(s, dtype="float32") if s.quantized else s
                         for s in inputs)
        data = labels_for(load_dataset(data_path, as_float, labels=True), outputs[0])
        data = data.head(limit) if limit else data
        raw_in: list[list[np.ndarray]] = [[] for _ in inputs]
        raw_out: list[list[np.ndarray]] = [[] for _ in outputs]
        for k in range(len(data)):
            sample = [contracts[s.name].apply(x) if s.name in contracts else x
                      for x, s in zip(data.sample(k), inputs)]
            q = [quantize(x, s).reshape(s.shape) for x, s in zip(sample, inputs)]
            for i, x in enumerate(q):
                raw_in[i].append(x)
            for i, y in enumerate(rt.infer(q)):
                raw_out[i].append(y)
    return Reference(inputs, outputs, data, [np.stack(x) for x in raw_in],
                     [np.stack(y) for y in raw_out])
