"""One precision plan -> one measured point: metric on eval data, bytes, latency, boundaries.

Every analyze/search run goes through `Evaluator.run`, which counts runs and their time, so
the search can report (and tests can bound) how many quantise-and-evaluate runs it made.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from device_agent.metrics import finite_db, sqnr_db
from device_agent.runtimes import LiteRTRuntime, dequantize, quantize, spec_from_details
from edgeq.capture import captured_output
from edgeq.errors import InputError, ModelError
from edgeq.model.data import Dataset
from edgeq.model.graph import OpInfo, read_ops, requantize_ops
from edgeq.progress import RunProgress
from edgeq.quant.quantize import Precision
from edgeq.quant.session import QuantSession
from edgeq.study.evaluate import Outputs, compare, run_model

log = logging.getLogger("edgeq")
METRICS = ("auto", "task", "sqnr", "cosine")
LATENCY_BLOCKS = 5
LATENCY_BUDGET_S = 1.5  # timed runs of one plan stop about here (at least 2 per block)


class MetricKind(str, Enum):
    """What a plan is judged by."""

    ACCURACY = "accuracy"  # classification, needs integer y
    RMSE = "rmse"  # regression, needs float y
    SQNR_DB = "sqnr_db"  # worst output's SQNR vs the float model
    COSINE = "cosine"  # worst output's mean per-sample cosine to the float model (embeddings)


@dataclass(frozen=True)
class _Style:
    unit: str
    column: str
    axis_label: str
    scale: float  # score = scale * value (higher is better)
    text: str  # format of a value: {v} is the value, {p} the value in percent


_STYLES = {
    MetricKind.ACCURACY: _Style("points", "accuracy", "accuracy (%)", 100.0, "{p:.2f}%"),
    MetricKind.RMSE: _Style("", "RMSE", "-RMSE", -1.0, "RMSE {v:.4g}"),
    MetricKind.SQNR_DB: _Style("dB", "SQNR", "output SQNR vs float (dB)", 1.0, "{v:.2f} dB"),
    MetricKind.COSINE: _Style("", "cosine", "mean cosine to float", 1.0, "cos {v:.4f}"),
}


@dataclass(frozen=True)
class Metric:
    """What a plan is judged by. `score` is higher-is-better in the metric's own unit:
    accuracy in points (0-100), RMSE negated, SQNR in dB, cosine as is."""

    kind: MetricKind

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", MetricKind(self.kind))

    @classmethod
    def choose(cls, requested: str, data: Dataset) -> Metric:
        """auto/task -> the task metric when the data has `y`, else output SQNR (with a notice);
        sqnr and cosine compare with the float model whatever the data has."""
        if requested not in METRICS:
            raise InputError(f"unknown metric '{requested}'; expected one of {', '.join(METRICS)}")
        if requested in ("sqnr", "cosine"):
            return cls(MetricKind.SQNR_DB if requested == "sqnr" else MetricKind.COSINE)
        if data.y is None:
            log.warning("%s has no y: judging plans by output SQNR vs the float model", data.source)
            return cls(MetricKind.SQNR_DB)
        return cls(MetricKind.ACCURACY if data.is_classification else MetricKind.RMSE)

    @property
    def _style(self) -> _Style:
        return _STYLES[self.kind]

    @property
    def unit(self) -> str:
        return self._style.unit

    def value(self, metrics: dict[str, Any]) -> float:
        """The metric as users read it (accuracy 0-1, RMSE, dB, cosine)."""
        if self.kind in (MetricKind.SQNR_DB, MetricKind.COSINE):
            return float(metrics[self.kind.value])
        return float(metrics["task"]["value"])

    def score(self, metrics: dict[str, Any]) -> float:
        return self.to_score(self.value(metrics))

    def to_score(self, value: float) -> float:
        """A metric value as a higher-is-better score."""
        return self._style.scale * value

    def from_score(self, score: float) -> float:
        """A score back as the metric's value."""
        return score / self._style.scale

    def format(self, value: float) -> str:
        """A metric value in the one unit users see everywhere: accuracy in %, RMSE, dB."""
        return self._style.text.format(v=value, p=100.0 * value)

    @property
    def column(self) -> str:
        """Table header for the metric's values (as `format` prints them)."""
        return self._style.column

    @property
    def axis_label(self) -> str:
        return self._style.axis_label

    def default_tolerance(self, reference_score: float) -> float:
        """Default allowed drop from the reference: 0.5 accuracy points, 1 dB, 1% of RMSE, or
        0.01 of cosine."""
        return {MetricKind.ACCURACY: 0.5, MetricKind.RMSE: 0.01 * abs(reference_score),
                MetricKind.SQNR_DB: 1.0, MetricKind.COSINE: 0.01}[self.kind]


@dataclass(frozen=True)
class LatencySetting:
    """How plans are timed: LiteRT as users run it (default settings: XNNPACK, which takes no
    int16 op) on N threads (the search's default, 2), or its builtin kernels on 1 thread."""

    xnnpack: bool = False
    threads: int = 1

    @classmethod
    def parse(cls, text: str) -> LatencySetting:
        """`builtin`, `xnnpack` (2 threads) or `xnnpack:N`."""
        kind, _, threads = text.partition(":")
        if kind == "builtin" and not threads:
            return cls()
        if kind == "xnnpack" and (not threads or (threads.isdigit() and 1 <= int(threads) <= 64)):
            return cls(True, int(threads or 2))
        raise InputError(f"unknown latency setting '{text}'; expected builtin, xnnpack or "
                         "xnnpack:THREADS (1-64)")

    def __str__(self) -> str:
        return f"xnnpack:{self.threads}" if self.xnnpack else "builtin"

    def describe(self) -> str:
        return (f"LiteRT default settings (XNNPACK), {self.threads} thread(s)" if self.xnnpack
                else "LiteRT builtin kernels, 1 thread")


BUILTIN_LATENCY = LatencySetting()
# Plans are timed as users run LiteRT unless told otherwise: XNNPACK takes no int16 op, and
# only this timing shows what an int16 island costs there (measured on MiniLM-L3: ~0.3 ms
# per LayerNorm island on 1.8 ms of int8, where the builtin kernels show next to nothing).
DEFAULT_LATENCY = "xnnpack"


@dataclass
class Point:
    """A plan and what it measured."""

    label: str
    int16: frozenset[int]  # float-model op indices asked to be int16
    default: Precision  # of the ops the plan does not list
    score: float
    value: float
    sqnr_db: float
    size_bytes: int
    latency_ms: float
    int16_ops: int  # ops that really are int16 in the quantised model
    requantize_ops: int  # QUANTIZE ops inside the graph (int8 <-> int16 boundaries)
    activation_bytes: int  # bytes of all op outputs: what the TFLM arena must hold, before reuse
    tflite: bytes = field(repr=False, default=b"")  # kept only for the endpoints
    latency_spread_ms: tuple[float, float] = (0.0, 0.0)  # lowest and highest block median
    error: str = ""  # the plan's model failed to run (one line naming the op); score -inf
    samples: int = 0  # eval samples the metric was measured on (fewer: a screening run)

    @classmethod
    def failed(cls, label: str, int16: frozenset[int], default: Precision, error: str) -> Point:
        """A plan whose quantised model does not run: on no frontier, chosen never."""
        return cls(label, int16, default, float("-inf"), float("nan"), float("-inf"), 0,
                   float("inf"), 0, 0, 0, error=error)

    def screened(self, full: int) -> bool:
        """Measured on fewer than the `full` eval samples (a screening run; 0: not recorded)."""
        return 0 < self.samples < full

    def cost(self, axis: str) -> float:
        """The point's cost on a COST_AXES axis: "bytes" or "latency_ms"."""
        return float(self.size_bytes if axis == "bytes" else self.latency_ms)

    @property
    def latency(self) -> Latency:
        low, high = self.latency_spread_ms
        return Latency(self.latency_ms, low or self.latency_ms, high or self.latency_ms)

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"label": self.label, "default": Precision(self.default).value,
                    "int16_requested": len(self.int16), "error": self.error,
                    "samples": self.samples}
        return {"label": self.label, "default": Precision(self.default).value,
                "int16_requested": len(self.int16),
                "int16_ops": self.int16_ops, "score": self.score, "value": self.value,
                "sqnr_db": self.sqnr_db, "bytes": self.size_bytes,
                "latency_ms": round(self.latency_ms, 5),
                "latency_spread_ms": [round(v, 5) for v in self.latency.spread],
                "requantize_ops": self.requantize_ops,
                "activation_bytes": self.activation_bytes, "samples": self.samples}


@dataclass(frozen=True)
class Latency:
    """A latency measured in blocks: the median of the block medians and their spread. Two
    latencies differ only when their spreads do not overlap (timing on a shared machine)."""

    median_ms: float
    low_ms: float
    high_ms: float

    @property
    def spread(self) -> tuple[float, float]:
        return self.low_ms, self.high_ms

    def ratio_to(self, base: Latency) -> float:
        """self / base, or exactly 1.0 when the difference is inside the measurement noise."""
        if self.low_ms <= base.high_ms and base.low_ms <= self.high_ms:
            return 1.0
        return self.median_ms / max(base.median_ms, 1e-9)


class Evaluator:
    """Quantises a plan with the session's one calibration and measures it on eval data."""

    def __init__(self, session: QuantSession, data: Dataset, metric: Metric,
                 latency_runs: int = 100, latency: LatencySetting = BUILTIN_LATENCY,
                 reference: Outputs | None = None) -> None:
        """`reference`: the float model's outputs on `data`, when already run."""
        self.session = session
        self.data = data
        self.metric = metric
        self.latency_runs = latency_runs
        self.latency = latency
        self.reference: Outputs = reference or run_model(session.model.tflite, data, xnnpack=True)
        self.names = [s.name for s in session.model.outputs]
        self.float_metrics = compare(self.reference, self.reference, self.names, data.y)
        self.runs = 0
        self.run_seconds = 0.0
        self.progress: RunProgress | None = None  # advanced after every run when set

    def float_value(self) -> float | None:
        """The float model's metric (None for SQNR, which is infinite against itself)."""
        if self.metric.kind is MetricKind.SQNR_DB:
            return None
        return self.metric.value(self.float_metrics)

    def run(self, int16: set[int] | frozenset[int], default: Precision, label: str,
            keep_model: bool = False) -> Point:
        """Quantise with `int16` (see QuantSession.quantize) and measure the result."""
        start = time.perf_counter()
        quantized = self.session.quantize(set(int16), default)
        try:
            outputs = run_model(quantized.tflite, self.data, label="quantised model")
        except ModelError as e:
            log.warning("plan '%s' does not run: %s", label, e)
            return self._counted(Point.failed(label, frozenset(int16), default, str(e)), start)
        metrics = compare(self.reference, outputs, self.names, self.data.y)
        ops = read_ops(quantized.tflite)
        latency = measure_latency(quantized.tflite, outputs.raw_inputs[0], self.latency_runs,
                                  setting=self.latency)
        point = Point(
            label=label, int16=frozenset(int16), default=default,
            score=self.metric.score(metrics), value=self.metric.value(metrics),
            sqnr_db=float(metrics["sqnr_db"]), size_bytes=len(quantized.tflite),
            latency_ms=latency.median_ms,
            int16_ops=len(quantized.int16_ops()),
            requantize_ops=requantize_ops(ops),
            activation_bytes=_activation_bytes(ops),
            tflite=quantized.tflite if keep_model else b"", latency_spread_ms=latency.spread)
        log.debug("run %d %s: %s %.3f, %d bytes, %.4f ms", self.runs + 1, label,
                  self.metric.column, point.value, point.size_bytes, point.latency_ms)
        return self._counted(point, start)

    def subset(self, n: int) -> Evaluator:
        """The same session, metric and timing on the first n eval samples (the float reference
        sliced, not run again): cheap screening runs."""
        ref = self.reference
        head = Outputs([v[:n] for v in ref.values], [r[:n] for r in ref.raw], ref.raw_inputs[:n])
        screen = Evaluator(self.session, self.data.head(n), self.metric, self.latency_runs,
                           self.latency, head)
        screen.progress = self.progress
        return screen

    def _counted(self, point: Point, start: float) -> Point:
        point.samples = len(self.data)
        self.runs += 1
        self.run_seconds += time.perf_counter() - start
        if self.progress is not None:
            self.progress.advance(point.label)
        return point


def raw_sample(tflite: bytes, float_sample: list[np.ndarray]) -> list[np.ndarray]:
    """A float sample quantised as this model's inputs expect."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        return [quantize(x, s) for x, s in zip(float_sample, rt.inputs())]




def measure_latency(tflite: bytes, raw_sample: list[np.ndarray], runs: int,
                    blocks: int = LATENCY_BLOCKS,
                    setting: LatencySetting = BUILTIN_LATENCY) -> Latency:
    """LiteRT latency of one inference (see LatencySetting) after a warm-up, timed in `blocks`
    blocks: a burst of load from elsewhere moves one block, not the median."""
    with captured_output("LiteRT"):
        rt = LiteRTRuntime(tflite, num_threads=setting.threads, use_xnnpack=setting.xnnpack)
    with rt:
        warmup = []
        for _ in range(min(10, runs)):
            start = time.perf_counter()
            rt.infer(raw_sample)
            warmup.append(time.perf_counter() - start)
            if sum(warmup) > LATENCY_BUDGET_S / 4:
                break
        # A slow plan (int16 matmuls: 70 ms on MiniLM) gets fewer runs, never fewer than 2 a block
        affordable = int(LATENCY_BUDGET_S / max(statistics.median(warmup), 1e-9) / blocks)
        per_block = max(min(runs // blocks, affordable), 2)
        medians = []
        for _ in range(blocks):
            samples = []
            for _ in range(per_block):
                start = time.perf_counter()
                rt.infer(raw_sample)
                samples.append((time.perf_counter() - start) * 1000.0)
            medians.append(statistics.median(samples))
    return Latency(statistics.median(medians), min(medians), max(medians))


def latency_ms(tflite: bytes, raw_sample: list[np.ndarray], runs: int) -> float:
    """Median LiteRT latency of one inference (see measure_latency)."""
    return measure_latency(tflite, raw_sample, runs).median_ms


def _activation_bytes(ops: list[OpInfo]) -> int:
    return sum(int(np.prod(shape)) * np.dtype(op.activation_dtype).itemsize
               for op in ops if op.activation_dtype != "none" for shape in op.output_shapes)


def tensor_sqnr(float_tflite: bytes, quant_tflite: bytes, data: Dataset,
                names: list[str], samples: int = 32) -> dict[str, float]:
    """SQNR (dB) of each named op output in the quantised model vs the float model's tensor."""
    ref = _all_tensors(float_tflite, data, names, samples, dequantized=False)
    got = _all_tensors(quant_tflite, data, names, samples, dequantized=True)
    result = {}
    for name in names:
        if name in ref and name in got and ref[name].shape == got[name].shape:
            result[name] = finite_db(sqnr_db(ref[name], got[name]))
    return result


def _all_tensors(tflite: bytes, data: Dataset, names: list[str], samples: int,
                 dequantized: bool) -> dict[str, np.ndarray]:
    wanted = set(names)
    with captured_output("LiteRT"):
        rt = LiteRTRuntime(tflite, preserve_all_tensors=True)
    with rt:
        interp = rt.interpreter
        details = [d for d in interp.get_tensor_details() if d["name"] in wanted]
        specs = rt.inputs()
        collected: dict[str, list[np.ndarray]] = {}
        for k in range(min(samples, len(data))):
            rt.infer([quantize(x, s) for x, s in zip(data.sample(k), specs)])
            for d in details:
                value = interp.get_tensor(d["index"])
                if dequantized:
                    value = dequantize(value, spec_from_details(d))
                collected.setdefault(d["name"], []).append(np.asarray(value, np.float64).ravel())
    return {n: np.concatenate(v) for n, v in collected.items()}
