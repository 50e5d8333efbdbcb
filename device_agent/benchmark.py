"""Latency benchmark in the manner of LiteRT's benchmark_model: init time, first inference,
warm-up, then timed `invoke()` calls (N runs and/or a minimum duration) on real inputs."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import AgentError
from .runtimes import Runtime, TensorSpec

MAX_RAW_SAMPLES = 1000


class Interrupted(AgentError):
    """The agent is stopping (SIGTERM): a measurement ends within a second, unfinished."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class BenchmarkConfig:
    """How long to measure: at least `runs` timed invokes and `min_seconds`, at most
    `max_seconds` (then stop early, with at least one run). `should_stop` is polled between
    invokes; when it says so the benchmark raises Interrupted."""

    runs: int = 100
    warmup: int = 10
    min_seconds: float = 0.0
    max_seconds: float = 60.0
    max_raw_samples: int = MAX_RAW_SAMPLES
    should_stop: Callable[[], bool] = _never


def benchmark(open_runtime: Callable[[], Runtime], samples: Sequence[Sequence[np.ndarray]],
              cfg: BenchmarkConfig = BenchmarkConfig()) -> tuple[dict[str, Any], Runtime]:
    """Open the model, time it, and return (latency report, the open runtime).

    `samples` are raw model inputs (already preprocessed and quantised), cycled through;
    inputs are loaded outside the timed region.
    """
    rss_before = current_rss_bytes()
    started = time.perf_counter()
    runtime = open_runtime()
    init_ms = (time.perf_counter() - started) * 1e3
    rss_loaded = current_rss_bytes()
    runtime.load_inputs(samples[0])
    first_ms = _timed_invoke(runtime)
    for k in range(cfg.warmup):
        if cfg.should_stop():
            raise Interrupted(f"stopped during warm-up ({k} of {cfg.warmup})")
        runtime.load_inputs(samples[(k + 1) % len(samples)])
        runtime.invoke()
    times = _timed_runs(runtime, samples, cfg)
    report = {
        "init_ms": round(init_ms, 4),
        "first_inference_ms": round(first_ms, 4),
        "warmup_runs": cfg.warmup,
        **latency_stats(times),
        "input_samples": len(samples),
        "peak_rss_bytes": peak_rss_bytes(),
        "model_rss_bytes": (rss_loaded - rss_before) if rss_before and rss_loaded else None,
        "samples_ms": [round(t, 5) for t in capped(times, cfg.max_raw_samples)],
        "samples_total": len(times),
    }
    return report, runtime


def _timed_invoke(runtime: Runtime) -> float:
    t0 = time.perf_counter_ns()
    runtime.invoke()
    return (time.perf_counter_ns() - t0) / 1e6


def _timed_runs(runtime: Runtime, samples: Sequence[Sequence[np.ndarray]],
                cfg: BenchmarkConfig) -> list[float]:
    times: list[float] = []
    begin = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - begin
        enough = len(times) >= cfg.runs and elapsed >= cfg.min_seconds
        if times and (enough or elapsed >= cfg.max_seconds):
            return times
        if cfg.should_stop():
            raise Interrupted(f"stopped after {len(times)} timed runs")
        runtime.load_inputs(samples[len(times) % len(samples)])
        times.append(_timed_invoke(runtime))


def latency_stats(times_ms: Sequence[float]) -> dict[str, Any]:
    """runs, p50/p90/p95/p99, mean, std, min, max (ms)."""
    t = np.asarray(times_ms, np.float64)
    if t.size == 0:
        raise ValueError("no timed runs to summarise")
    p50, p90, p95, p99 = np.percentile(t, [50, 90, 95, 99])
    return {"runs": int(t.size), "p50_ms": round(float(p50), 5), "p90_ms": round(float(p90), 5),
            "p95_ms": round(float(p95), 5), "p99_ms": round(float(p99), 5),
            "mean_ms": round(float(t.mean()), 5), "std_ms": round(float(t.std()), 5),
            "min_ms": round(float(t.min()), 5),
            "max_ms": round(float(t.max()), 5)}


def capped(values: Sequence[float], limit: int) -> list[float]:
    """At most `limit` values, evenly spaced over the run (keeps drift visible)."""
    if len(values) <= limit:
        return list(values)
    idx = np.linspace(0, len(values) - 1, limit).round().astype(int)
    return [values[i] for i in idx]


def peak_rss_bytes() -> int:
    """Peak resident set of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    """Resident set now (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def random_inputs(specs: Sequence[TensorSpec], n: int = 8, seed: int = 0) -> list[list[np.ndarray]]:
    """Inputs for a model deployed without eval data: uniform over each dtype's range."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        sample = []
        for spec in specs:
            dtype = np.dtype(spec.dtype)
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                values = rng.integers(info.min, info.max, spec.shape, endpoint=True)
                sample.append(values.astype(dtype))
            else:
                sample.append(rng.standard_normal(spec.shape).astype(dtype))
        samples.append(sample)
    return samples
