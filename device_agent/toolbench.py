"""What LiteRT's own benchmark tools print, as the agent's latency report.

Two formats:
- the classic `benchmark_model` (TFLite): "Inference timings in us: Init: A, First inference: B,
  Warmup (avg): C, Inference (avg): D" and one `count=N first=F curr=C min=M max=X avg=V std=S`
  line per phase (microseconds; the last is the timed inference runs). It prints no percentiles.
- LiteRT 2.x's `benchmark_litert_model`: a `== BENCHMARK RESULTS ==` block in ms, and the same
  figures as JSON with `--result_json` (median and p95, no p90/p99).

Fields a tool does not give stay out of the report, and `source` says which tool and what it
lacked, so a mean is never passed off as a median.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TIMINGS = re.compile(r"Inference timings in us: Init: ([0-9.]+), First inference: ([0-9.]+), "
                      r"Warmup \(avg\): ([0-9.e+-]+), Inference \(avg\): ([0-9.e+-]+)")
_COUNT = re.compile(r"count=(\d+)(?: first=(\d+))? curr=(\d+) min=(\d+) max=(\d+) avg=([0-9.e+-]+) "
                    r"std=(\d+)")
_BLOCK_LINE = re.compile(r"^(Model initialization|Warmup \(first\)|Warmup \(avg\)|"
                         r"Inference \((avg|min|max|median|std|p5|p95)\)):\s+([0-9.]+) ms")


class ToolOutputError(ValueError):
    """The tool's output holds no timings; the text says what was expected."""


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Classic benchmark_model stdout -> latency fields in ms."""
    timings = _TIMINGS.search(text)
    counts = _COUNT.findall(text)
    if timings is None or not counts:
        raise ToolOutputError("benchmark_model printed no 'Inference timings in us' line and "
                              "'count= ... avg= std=' statistics (did it fail to load the model?)")
    init, first, _warmup, _avg = (float(v) for v in timings.groups())
    runs, _first, _curr, low, high, avg, std = counts[-1]
    return {"runs": int(runs), "mean_ms": float(avg) / 1e3, "min_ms": int(low) / 1e3,
            "max_ms": int(high) / 1e3, "std_ms": int(std) / 1e3, "init_ms": init / 1e3,
            "first_inference_ms": first / 1e3,
            "source": "benchmark_model (mean/min/max/std as printed; it gives no percentiles)"}


def parse_benchmark_litert(text: str) -> dict[str, Any]:
    """benchmark_litert_model: its --result_json document, or the BENCHMARK RESULTS block."""
    with_json = _litert_json(text)
    if with_json is not None:
        return with_json
    found = {}
    for line in text.splitlines():
        m = _BLOCK_LINE.match(line.strip())
        if m:
            found[m.group(2) or m.group(1)] = float(m.group(3))
    if "avg" not in found:
        raise ToolOutputError("benchmark_litert_model printed no BENCHMARK RESULTS block with "
                              "'Inference (avg)'")
    runs = re.search(r"Inference \(avg\):\s+[0-9.]+ ms \((\d+) runs\)", text)
    return _litert_fields({"avg_ms": found["avg"], "min_ms": found.get("min"),
                           "max_ms": found.get("max"), "median_ms": found.get("median"),
                           "std_ms": found.get("std"), "p95_ms": found.get("p95"),
                           "init_ms": found.get("Model initialization"),
                           "warmup_first_ms": found.get("Warmup (first)"),
                           "num_runs": int(runs.group(1)) if runs else None})


def _litert_json(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(text[start:text.rfind("}") + 1])
    except ValueError:
        return None
    latency = doc.get("latency") if isinstance(doc, dict) else None
    return _litert_fields(latency) if isinstance(latency, dict) and "avg_ms" in latency else None


def _litert_fields(latency: dict[str, Any]) -> dict[str, Any]:
    keys = {"num_runs": "runs", "avg_ms": "mean_ms", "median_ms": "p50_ms", "p95_ms": "p95_ms",
            "min_ms": "min_ms", "max_ms": "max_ms", "std_ms": "std_ms", "init_ms": "init_ms",
            "warmup_first_ms": "first_inference_ms"}
    out: dict[str, Any] = {mine: latency[theirs] for theirs, mine in keys.items()
                           if isinstance(latency.get(theirs), (int, float))}
    out["source"] = ("benchmark_litert_model (median and p95 as printed, rounded to 0.01 ms; "
                     "it gives no p90/p99)")
    return out


def parse_tool_output(text: str) -> dict[str, Any]:
    """Either format, whichever the text holds."""
    if "BENCHMARK RESULTS" in text or '"latency"' in text:
        return parse_benchmark_litert(text)
    return parse_benchmark_model(text)
