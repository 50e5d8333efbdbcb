"""The latency benchmark on a real model in real LiteRT."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from device_agent.benchmark import BenchmarkConfig, benchmark, capped, latency_stats, random_inputs
from device_agent.runtimes import LiteRTRuntime


def test_benchmark_reports_percentiles_on_real_invokes(cnn_int8: Path) -> None:
    model = cnn_int8.read_bytes()
    specs = LiteRTRuntime(model).inputs()
    samples = random_inputs(specs, n=4)
    report, rt = benchmark(lambda: LiteRTRuntime(model), samples,
                           BenchmarkConfig(runs=50, warmup=3, max_raw_samples=20))
    with rt:
        assert rt.infer(samples[0])[0].dtype.name == "int8"  # the runtime is handed back open
    assert report["runs"] == 50 and report["samples_total"] == 50 and len(report["samples_ms"]) == 20
    ordered = ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    assert report["min_ms"] > 0
    assert all(report[a] <= report[b] for a, b in itertools.pairwise(ordered))
    assert report["init_ms"] > 0 and report["first_inference_ms"] > 0
    assert report["peak_rss_bytes"] > 10 * 2**20


def test_min_seconds_keeps_timing_and_max_seconds_stops_it(cnn_int8: Path) -> None:
    model = cnn_int8.read_bytes()
    samples = random_inputs(LiteRTRuntime(model).inputs(), n=2)
    t0 = time.perf_counter()
    report, _ = benchmark(lambda: LiteRTRuntime(model), samples,
                          BenchmarkConfig(runs=1, warmup=0, min_seconds=0.3))
    assert time.perf_counter() - t0 >= 0.3 and report["runs"] > 1
    report, _ = benchmark(lambda: LiteRTRuntime(model), samples,
                          BenchmarkConfig(runs=10**7, warmup=0, max_seconds=0.2))
    assert 1 <= report["runs"] < 10**7


def test_stats_and_capping() -> None:
    stats = latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["p50_ms"] == 3.0 and stats["max_ms"] == 100.0 and stats["runs"] == 5
    assert capped(list(range(10)), 4) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="no timed runs"):
        latency_stats([])
