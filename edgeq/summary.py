"""Human-readable summaries of edgeq reports (the CLI prints these; --json prints the report)."""

from __future__ import annotations

from typing import Any

DTYPE_COLUMNS = ("int8", "int16", "int32", "float32")


def convert_summary(report: dict[str, Any]) -> str:
    """Op types by activation dtype, size, metrics, TFLM check, warnings."""
    lines = [f"edgeq convert: {report['source']} -> {report['mode']}", ""]
    by_type = report["summary"]["by_type"]
    width = max([len(t) for t in by_type] + [7])
    lines.append(f"{'op type':<{width}}  " + "  ".join(f"{c:>7}" for c in DTYPE_COLUMNS))
    for op_type in sorted(by_type):
        counts = by_type[op_type]
        lines.append(f"{op_type:<{width}}  " + "  ".join(
            f"{counts.get(c, 0) or '':>7}" for c in DTYPE_COLUMNS))
    s, m = report["summary"], report["model"]
    lines += ["",
              f"integer ops   {s['integer_ops']}/{s['ops']} ({s['integer_coverage_pct']:.1f}%), "
              f"{s['int16_ops']} in int16",
              f"size          {m['bytes']:,} bytes (float {m['float_bytes']:,})"]
    for io in report["io"]["inputs"] + report["io"]["outputs"]:
        lines.append(f"  {io['name']:<20} {io['dtype']:<7} {str(io['shape']):<14} "
                     f"scale={io['scale']:.6g} zero_point={io['zero_point']}")
    lines += _metric_lines(report["metrics"])
    tflm = report["tflm"]
    if tflm["runs"]:
        lines.append(f"TFLite Micro  runs; max |diff| vs LiteRT {tflm['max_abs_diff_lsb']} LSB "
                     f"over {tflm['samples']} samples")
    else:
        lines.append(f"TFLite Micro  FAILS: {tflm.get('error', '')}")
    for op in report["float_ops"]:
        lines.append(f"float op      {op['op']} (node {op['index']}): {op['reason']}")
    lines += [f"rewrite       {a['rewrite']}: {a['why']}" for a in report["rewrites"]["applied"]]
    lines += [f"warning       {w}" for w in report["warnings"]]
    if report.get("strict", {}).get("problems"):
        lines += [f"strict        {p}" for p in report["strict"]["problems"]]
    return "\n".join(lines)


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"vs float      on {metrics['samples']} {metrics['data']} samples"]
    for o in metrics["outputs"]:
        lines.append(f"  {o['name']:<20} SQNR {o['sqnr_db']:6.2f} dB   cosine {o['cosine']:.5f}")
    task, ref = metrics.get("task"), metrics.get("float_task")
    if task and ref:
        lines.append(f"  {task['metric']:<20} {task['value']:.4f} (float {ref['value']:.4f})")
    return lines
