"""Numbers that compare outputs: SQNR, cosine, the task metric and agreement in LSB. Shared by
the host's evaluation and the device's, so both report the same quantities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64).ravel()
    noise = float(np.sum((ref - test.astype(np.float64).ravel()) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def finite_db(x: float) -> float:
    """JSON has no inf: cap identical outputs at 200 dB."""
    return min(x, 200.0)


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


def agreement(device_raw: list[np.ndarray], host_raw: list[np.ndarray],
              device_values: list[np.ndarray], host_values: list[np.ndarray]) -> dict[str, Any]:
    """How closely a device's raw outputs follow the host's on the same samples.

    exact_match_rate: share of samples whose every output is bit-identical; max_abs_diff_lsb:
    the largest integer difference; cosine: of the dequantised outputs, worst output."""
    n = len(device_raw[0])
    same = np.ones(n, bool)
    worst = 0.0
    for d, h in zip(device_raw, host_raw):
        diff = np.abs(d.reshape(n, -1).astype(np.float64) - h.reshape(n, -1).astype(np.float64))
        same &= np.all(diff == 0, axis=1)
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return {"samples": n, "exact_match_rate": float(same.mean()),
            "max_abs_diff_lsb": int(worst) if float(worst).is_integer() else worst,
            "cosine": min(cosine(d, h) for d, h in zip(device_values, host_values))}
