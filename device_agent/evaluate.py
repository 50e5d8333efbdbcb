"""Accuracy on the device: the eval set shipped in the bundle, put through the model's
preprocessing contract and quantised exactly as on the host, then compared with the labels and
with the host's own quantised outputs (so kernels that differ from the host's show up)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .benchmark import Interrupted
from .bundle import Bundle
from .metrics import agreement, task_metric
from .runtimes import Runtime, dequantize, quantize


def raw_samples(bundle: Bundle, max_samples: int = 0) -> list[list[np.ndarray]]:
    """The bundle's eval inputs as raw model inputs, one list per sample (batch 1 each).

    Names and quantisation come from the bundle's own I/O description (the host's), not the
    interpreter's: TFLM, for one, names inputs by position."""
    inputs = bundle.eval_inputs()
    if inputs is None:
        return []
    specs, contracts = bundle.inputs(), bundle.contracts()
    n = len(inputs[0]) if not max_samples else min(max_samples, len(inputs[0]))
    samples = []
    for k in range(n):
        sample = []
        for x, spec in zip(inputs, specs):
            value = x[k : k + 1]
            if spec.name in contracts:
                value = contracts[spec.name].apply(value)
            sample.append(quantize(value, spec).reshape(spec.shape))
        samples.append(sample)
    return samples


def evaluate(runtime: Runtime, bundle: Bundle, samples: list[list[np.ndarray]],
             should_stop: Callable[[], bool] | None = None) -> dict[str, Any] | None:
    """Task metric and agreement with the host on `samples` = raw_samples(bundle, ...) (made
    once by the caller, who may have timed the same samples); None without eval data.
    `should_stop` is polled between samples (Interrupted when it says so)."""
    out_specs = bundle.outputs()
    if not samples:
        return None
    per_sample = []
    for k, s in enumerate(samples):
        if should_stop is not None and should_stop():
            raise Interrupted(f"stopped after {k} of {len(samples)} eval samples")
        per_sample.append(runtime.infer(s))
    raw = [np.concatenate([o[i] for o in per_sample]) for i in range(len(out_specs))]
    values = [dequantize(r, s) for r, s in zip(raw, out_specs)]
    n = len(samples)
    y = bundle.labels()
    labels = None if y is None else y[:n]
    report: dict[str, Any] = {"samples": n, "task": task_metric(values[0], labels)}
    reference = bundle.reference()
    if reference is not None and len(reference[0]) >= n:
        host_raw = [r[:n].reshape(d.shape) for r, d in zip(reference, raw)]
        host_values = [dequantize(r, s) for r, s in zip(host_raw, out_specs)]
        report["host_task"] = task_metric(host_values[0], labels)
        report["agreement"] = agreement(raw, host_raw, values, host_values)
    else:
        report["host_task"], report["agreement"] = None, None
    return report
