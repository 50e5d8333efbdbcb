"""What `edgeq convert` found, typed until it is written as report.json (`to_dict`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device_agent.runtimes import TensorSpec
from edgeq import __version__
from edgeq.model.rewrite import Rewritten
from edgeq.quant.quantize import OpOutcome
from edgeq.study.compare import Divergence


@dataclass(frozen=True)
class TflmCheck:
    """The quantised model in the real TFLite Micro interpreter against LiteRT's reference
    kernels (the arithmetic TFLM implements) and LiteRT's builtin kernels."""

    runs: bool
    samples: int
    arena_bytes: int
    version: str
    tolerance_lsb: int
    error: str | None = None
    reference: str = "LiteRT reference kernels"  # what TFLM is compared with
    max_abs_diff_lsb_per_output: tuple[float, ...] = ()  # float only for float models
    within_tolerance: bool = False
    rounding_drift: bool = False
    sqnr_db_vs_float: dict[str, float | None] | None = None
    first_divergence: Divergence | None = None
    builtin_max_abs_diff_lsb: float = 0
    builtin_within_tolerance: bool = True
    builtin_first_divergence: Divergence | None = None
    diagnostics: tuple[str, ...] = ()

    @property
    def max_abs_diff_lsb(self) -> float:
        return max(self.max_abs_diff_lsb_per_output, default=0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"runs": self.runs, "samples": self.samples,
                             "arena_bytes": self.arena_bytes, "version": self.version,
                             "tolerance_lsb": self.tolerance_lsb, "reference": self.reference}
        if not self.runs:
            return {**d, "error": self.error}
        return {**d, "max_abs_diff_lsb": self.max_abs_diff_lsb,
                "max_abs_diff_lsb_per_output": list(self.max_abs_diff_lsb_per_output),
                "within_tolerance": self.within_tolerance, "rounding_drift": self.rounding_drift,
                "sqnr_db_vs_float": self.sqnr_db_vs_float,
                "first_divergence": _divergence(self.first_divergence),
                "litert_builtin_vs_reference": {
                    "max_abs_diff_lsb": self.builtin_max_abs_diff_lsb,
                    "within_tolerance": self.builtin_within_tolerance,
                    "first_divergence": _divergence(self.builtin_first_divergence)},
                "diagnostics": list(self.diagnostics)}


def _divergence(d: Divergence | None) -> dict[str, Any] | None:
    return d.to_dict() if d else None


@dataclass(frozen=True)
class ConvertReport:
    """report.json: per-op table, coverage, size, I/O quantisation, metrics, TFLM check."""

    source: str
    source_kind: str
    mode: str
    calibration: str  # the method, e.g. minmax
    calibration_samples: int
    model_bytes: int
    float_bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    outcomes: tuple[OpOutcome, ...]
    int16_ops: int
    requantize_ops: int
    metrics: dict[str, Any]  # evaluate.compare's per-output and task metrics
    tflm: TflmCheck
    warnings: tuple[str, ...]
    rewrites: Rewritten
    timing_s: dict[str, float] = field(default_factory=dict)
    strict: bool = False
    problems: tuple[str, ...] = ()  # what --strict rejects
    mixed_vs_int16x8: dict[str, Any] | None = None

    @property
    def float_ops(self) -> list[OpOutcome]:
        """Ops that are not integer-only."""
        return [o for o in self.outcomes if not o.integer]

    @property
    def integer_ops(self) -> int:
        return sum(1 for o in self.outcomes if o.integer)

    @property
    def integer_coverage_pct(self) -> float:
        return round(100.0 * self.integer_ops / max(len(self.outcomes), 1), 2)

    def by_type(self) -> dict[str, dict[str, int]]:
        """Op type -> activation dtype -> count."""
        counts: dict[str, dict[str, int]] = {}
        for o in self.outcomes:
            per_dtype = counts.setdefault(o.op.op, {})
            per_dtype[o.op.activation_dtype] = per_dtype.get(o.op.activation_dtype, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "edgeq_version": __version__,
            "source": self.source,
            "source_kind": self.source_kind,
            "mode": self.mode,
            "calibration": {"method": self.calibration, "samples": self.calibration_samples},
            "model": {"file": "model.tflite", "bytes": self.model_bytes,
                      "float_bytes": self.float_bytes, "sha256": self.sha256},
            "io": {"inputs": [s.to_dict() for s in self.inputs],
                   "outputs": [s.to_dict() for s in self.outputs]},
            "ops": [o.to_dict() for o in self.outcomes],
            "float_ops": [{"index": o.op.index, "op": o.op.op, "name": o.op.name,
                           "reason": o.reason} for o in self.float_ops],
            "summary": {"ops": len(self.outcomes), "integer_ops": self.integer_ops,
                        "integer_coverage_pct": self.integer_coverage_pct,
                        "int16_ops": self.int16_ops, "requantize_ops": self.requantize_ops,
                        "by_type": self.by_type()},
            "metrics": self.metrics,
            "tflm": self.tflm.to_dict(),
            "warnings": list(self.warnings),
        }
        if self.mixed_vs_int16x8 is not None:
            d["mixed_vs_int16x8"] = self.mixed_vs_int16x8
        d["rewrites"] = self.rewrites.to_dict()
        d["timing_s"] = self.timing_s
        d["strict"] = {"enabled": self.strict, "ok": not self.problems,
                       "problems": list(self.problems)}
        return d
