"""edgeq's own calibration: per-tensor ranges from the float model, computed once per run.

litert-quantizer's `calibrate()` keeps a moving average of each tensor's min/max, which clips the
tails; measured on the bundled models it cost 15-30 dB of output SQNR (README, "Owns calibration"). edgeq runs
the float model with every tensor preserved and records the absolute min/max (or a percentile),
in the format `Quantizer.quantize()` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_agent.runtimes import LiteRTRuntime
from edgeq.capture import captured_output
from edgeq.errors import InputError
from edgeq.model.data import Dataset
from edgeq.model.graph import produced_tensor_indices
from edgeq.progress import progress

# litert-quantizer ignores values beyond about the bfloat16 range (e.g. -inf padding constants).
VALID_RANGE = 3e38
# Smallest |range| a tensor gets. Kernels quantise the bounds of a fused RELU6 into the output's
# scale (TFLite kernel_util `Quantize(6.0 / scale)` must fit int32): an int16 tensor spanning
# less than 6 * 32767 / 2**31 = 9.2e-5 fails to prepare. Seen on an untrained MobileNetV2 whose
# last blocks carry ~1e-10; the plain converter widens near-empty ranges too.
MIN_ABS_BOUND = 1e-4
PERCENTILE_CAP = 100_000  # values kept per tensor for percentile calibration


MSE_CLIPS = tuple(np.round(np.arange(1.0, 0.19, -0.05), 2))  # fractions of the range tried


@dataclass(frozen=True)
class CalibrationMethod:
    """`minmax` (absolute range), `percentile:P` (P-th / (100-P)-th percentile) or `mse` (per
    tensor, the clipped range with the least int8 quantisation error on the calibration data)."""

    kind: str = "minmax"
    percentile: float = 100.0

    @classmethod
    def parse(cls, text: str) -> CalibrationMethod:
        if text == "minmax":
            return cls()
        if text == "mse":
            return cls("mse")
        if text.startswith("percentile:"):
            try:
                p = float(text.split(":", 1)[1])
            except ValueError:
                p = -1.0
            if 50.0 < p <= 100.0:
                return cls("percentile", p)
        raise InputError(f"unknown calibration '{text}'; expected 'minmax', 'mse' or "
                         "'percentile:P' with 50 < P <= 100 (e.g. percentile:99.99)")

    def __str__(self) -> str:
        return f"percentile:{self.percentile:g}" if self.kind == "percentile" else self.kind

    @property
    def keeps_values(self) -> bool:
        """Whether ranges need the values, not only their min and max."""
        return self.kind in ("percentile", "mse")


MINMAX = CalibrationMethod()
Statistics = dict[str, dict[str, np.ndarray]]


def calibrate(tflite: bytes, data: Dataset, method: CalibrationMethod = MINMAX,
              show_progress: bool = True, notes: list[str] | None = None) -> Statistics:
    """Run the float model on every calibration sample; return {tensor name: {min, max}}.

    `notes` receives one line per tensor whose range had to be changed (never silently)."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite, preserve_all_tensors=True) as rt:
        interp = rt.interpreter
        activations = _activation_indices(interp)
        tensors = [t for t in interp.get_tensor_details() if t["index"] in activations]
    collector = _RangeCollector(method)
    for k in progress(range(len(data)), "calibrating", show_progress):
        rt.infer(data.sample(k))
        for t in tensors:
            try:
                value = interp.get_tensor(t["index"])
            except ValueError:  # tensors without data (e.g. optional inputs)
                continue
            collector.add(t["name"], value)
    stats = collector.result()
    if notes is not None:
        notes += collector.notes()
    return stats


def _activation_indices(interp) -> set[int]:
    """Graph inputs and op outputs. Constants (weights) are left out on purpose: the quantizer
    derives their per-channel ranges from the buffers, and a per-tensor range given here would
    override that (measured: -0.7 dB on the bundled CNN)."""
    return produced_tensor_indices(interp) | {d["index"] for d in interp.get_input_details()}


class _RangeCollector:
    def __init__(self, method: CalibrationMethod) -> None:
        self.method = method
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.values: dict[str, list[np.ndarray]] = {}
        self.ndim: dict[str, int] = {}
        self.widened: dict[str, tuple[float, float]] = {}
        self.dropped: dict[str, int] = {}

    def add(self, name: str, value: np.ndarray) -> None:
        if value.size == 0 or not np.issubdtype(value.dtype, np.number):
            return
        flat = value.astype(np.float64).ravel()
        usable = np.abs(flat) < VALID_RANGE
        if not usable.all():
            self.dropped[name] = self.dropped.get(name, 0) + int((~usable).sum())
            flat = flat[usable]
        if flat.size == 0:
            return
        self.ndim[name] = value.ndim
        self.lo[name] = min(self.lo.get(name, np.inf), float(flat.min()))
        self.hi[name] = max(self.hi.get(name, -np.inf), float(flat.max()))
        if self.method.keeps_values:
            kept = self.values.setdefault(name, [])
            if sum(len(v) for v in kept) < PERCENTILE_CAP:
                kept.append(flat)

    def result(self) -> Statistics:
        stats: Statistics = {}
        for name, low in self.lo.items():
            lo, hi = low, self.hi[name]
            if self.method.kind == "percentile" and name in self.values:
                allv = np.concatenate(self.values[name])
                lo, hi = (float(np.percentile(allv, 100.0 - self.method.percentile)),
                          float(np.percentile(allv, self.method.percentile)))
            elif self.method.kind == "mse" and name in self.values:
                lo, hi = least_error_range(np.concatenate(self.values[name]), lo, hi)
            if max(abs(lo), abs(hi)) < MIN_ABS_BOUND:
                self.widened[name] = (lo, hi)
                lo, hi = _widen(lo, hi)
            shape = (1,) * max(self.ndim[name], 1)
            stats[name] = {"min": np.full(shape, lo, np.float32), "max": np.full(shape, hi, np.float32)}
        return stats

    def notes(self) -> list[str]:
        """What was changed or left out, by tensor name."""
        lines = [f"calibration: tensor '{name}' spans only [{lo:.3g}, {hi:.3g}]; widened to "
                 f"[{_widen(lo, hi)[0]:g}, {_widen(lo, hi)[1]:g}] so its kernels can prepare"
                 for name, (lo, hi) in self.widened.items()]
        lines += [f"calibration: tensor '{name}' has {n} values of magnitude >= {VALID_RANGE:g} "
                  "(e.g. a float32-min mask); they are left out of its range"
                  for name, n in self.dropped.items()]
        return lines


def least_error_range(values: np.ndarray, lo: float, hi: float,
                      levels: int = 256) -> tuple[float, float]:
    """The range [lo, hi] * c (c in MSE_CLIPS) whose `levels`-step affine quantisation of
    `values` (clipped to it) has the least mean squared error: tails clipped only where the
    finer step for everything else pays for them."""
    best, best_err = (lo, hi), np.inf
    for clip in MSE_CLIPS:
        a, b = lo * clip, hi * clip
        step = (b - a) / (levels - 1)
        if step <= 0:
            return lo, hi
        q = np.round((np.clip(values, a, b) - a) / step) * step + a
        err = float(np.mean((q - values) ** 2))
        if err < best_err:
            best, best_err = (float(a), float(b)), err
    return best


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """A range of at least MIN_ABS_BOUND in magnitude that keeps the sign of the values."""
    if lo >= 0:
        return lo, MIN_ABS_BOUND
    if hi <= 0:
        return -MIN_ABS_BOUND, hi
    return -MIN_ABS_BOUND, MIN_ABS_BOUND
