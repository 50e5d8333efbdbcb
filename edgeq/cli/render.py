"""Human-readable summaries of edgeq reports (the CLI prints these; --json prints the report)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.reports import ConvertReport, TflmCheck

DTYPE_COLUMNS = ("int8", "int16", "int32", "float32")


def convert_summary(report: ConvertReport) -> str:
    """Op types by activation dtype, size, metrics, TFLM check, warnings."""
    lines = [f"edgeq convert: {report.source} -> {report.mode}", ""]
    by_type = report.by_type()
    width = max([len(t) for t in by_type] + [7])
    lines.append(f"{'op type':<{width}}  " + "  ".join(f"{c:>7}" for c in DTYPE_COLUMNS))
    for op_type in sorted(by_type):
        counts = by_type[op_type]
        lines.append(f"{op_type:<{width}}  " + "  ".join(
            f"{counts.get(c, 0) or '':>7}" for c in DTYPE_COLUMNS))
    lines += ["",
              f"integer ops   {report.integer_ops}/{len(report.outcomes)} "
              f"({report.integer_coverage_pct:.1f}%), {report.int16_ops} in int16"
              + (f", {report.requantize_ops} int8<->int16 QUANTIZE boundaries"
                 if report.requantize_ops else ""),
              f"size          {report.model_bytes:,} bytes (float {report.float_bytes:,})"]
    for io in report.inputs + report.outputs:
        lines.append(f"  {io.name:<20} {io.dtype:<7} {list(io.shape)!s:<14} "
                     f"scale={io.scale:.6g} zero_point={io.zero_point}")
    lines += _metric_lines(report.metrics)
    tflm = report.tflm
    lines += _tflm_lines(tflm) if tflm.runs else [f"TFLite Micro  FAILS: {tflm.error}"]
    for o in report.float_ops:
        lines.append(f"float op      {o.op.op} (node {o.op.index}): {o.reason}")
    lines += rewrite_lines(report.rewrites.applied)
    shown = report.warnings[:8]
    lines += [f"warning       {w}" for w in shown]
    if len(report.warnings) > len(shown):
        lines.append(f"warning       ... {len(report.warnings) - len(shown)} more in report.json")
    lines += [f"strict        {p}" for p in report.problems]
    return "\n".join(lines)


def rewrite_lines(applied: list[dict[str, Any]]) -> list[str]:
    """One line per rewrite kind: how many places, and why (the first place's reason)."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for a in applied:
        by_kind.setdefault(a["rewrite"], []).append(a)
    return [f"rewrite       {kind}" + (f" x{len(done)}" if len(done) > 1 else "") + f": {done[0]['why']}"
            for kind, done in by_kind.items()]


def _tflm_lines(tflm: TflmCheck) -> list[str]:
    """TFLM vs LiteRT's reference kernels, LiteRT's own optimized kernels, and vs float."""
    verdict = ("" if tflm.within_tolerance and not tflm.rounding_drift else
               " (rounding drift: no op parts)" if tflm.rounding_drift else
               f" (BEYOND tolerance {tflm.tolerance_lsb})")
    lines = [f"TFLite Micro  runs; max |diff| vs {tflm.reference} {tflm.max_abs_diff_lsb:g} "
             f"LSB over {tflm.samples} samples{verdict}"]
    if tflm.builtin_max_abs_diff_lsb:
        where = tflm.builtin_first_divergence
        lines.append(f"              LiteRT's builtin kernels differ from its reference kernels by "
                     f"{tflm.builtin_max_abs_diff_lsb:g} LSB" + (
                         f", first at op {where.op_index} {where.op}" if where else ""))
    sqnr = tflm.sqnr_db_vs_float
    if sqnr and None not in sqnr.values():
        lines.append(f"              on them SQNR vs float: TFLM {sqnr['tflm']:.2f} dB, LiteRT "
                     f"reference {sqnr['litert_reference']:.2f}, builtin {sqnr['litert_builtin']:.2f}")
    where = tflm.first_divergence
    if where:
        lines.append(f"              first diverging op {where.op_index} {where.op} "
                     f"'{where.name.split(';')[0]}': "
                     + "; ".join(where.hints or ["see report.json"]))
    return lines + [f"              {d}" for d in tflm.diagnostics]


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"vs float      on {metrics['samples']} {metrics['data']} samples"]
    for o in metrics["outputs"]:
        lines.append(f"  {o['name']:<20} SQNR {o['sqnr_db']:6.2f} dB   cosine {o['cosine']:.5f}")
    task, ref = metrics.get("task"), metrics.get("float_task")
    if task and ref:
        lines.append(f"  {task['metric']:<20} {task['value']:.4f} (float {ref['value']:.4f})")
    return lines


def bench_summary(result: dict[str, Any]) -> str:
    """A device's benchmark report, a few lines."""
    rt, model = result["runtime"], result["model"]
    lines = [f"edgeq bench: {result['device']} ({result['arch']}, {rt['name']} {rt['version']}, "
             f"{rt.get('threads', 1)} thread(s)) model {model.get('name')} "
             f"(sha256 {model['sha256'][:12]}...)"]
    lat = result.get("latency")
    if lat:
        lines.append(f"latency   {lat['runs']} runs on {lat.get('inputs', 'inputs')}: p50 "
                     f"{lat['p50_ms']:.4f}  p90 {lat['p90_ms']:.4f}  p99 {lat['p99_ms']:.4f}  "
                     f"mean {lat['mean_ms']:.4f} +- {lat['std_ms']:.4f} ms")
        lines.append(f"          init {lat['init_ms']:.2f} ms, first inference "
                     f"{lat['first_inference_ms']:.3f} ms, {lat['warmup_runs']} warm-up runs, "
                     f"peak RSS {lat['peak_rss_bytes'] / 2**20:.1f} MiB")
    power = result.get("power")
    if power:
        if power.get("energy_per_inference_mj") is None:
            lines.append(f"power     {power['source']}: not measured ({power['reason']})")
        else:
            lines.append(f"power     {power['source']}: idle {power['idle_w']:.3f} W, busy "
                         f"{power['busy_w']:.3f} W, {power['energy_per_inference_mj']:.4f} mJ per "
                         f"inference ({power['dynamic_energy_per_inference_mj']:.4f} above idle)")
    acc = result.get("accuracy")
    if acc:
        task, host, agree = acc.get("task"), acc.get("host_task"), acc.get("agreement")
        if task:
            ref = f" (host {host['value']:.4f})" if host else ""
            lines.append(f"accuracy  {task['metric']} {task['value']:.4f}{ref} on "
                         f"{acc['samples']} samples")
        if agree:
            lines.append(f"agreement {agree['exact_match_rate'] * 100:.1f}% of samples bit-exact "
                         f"with the host, max {agree['max_abs_diff_lsb']} LSB, cosine "
                         f"{agree['cosine']:.5f}")
    lines += [f"error     {e}" for e in result.get("errors") or []]
    lines.append(f"report    {result['report_id']}")
    return "\n".join(lines)


def devices_table(statuses: list[dict[str, Any]]) -> str:
    """One line per device from its retained status."""
    if not statuses:
        return "no devices have connected to this broker"
    lines = [f"{'device':<20} {'state':<8} {'arch':<8} {'runtime':<24} {'model':<24} "
             f"{'sha256':<12} groups"]
    for s in statuses:
        rt, model = s.get("runtime") or {}, s.get("model") or {}
        groups = ",".join(map(str, s.get("groups") or [])) or "-"
        lines.append(f"{s['device']:<20} {s.get('state', '?'):<8} {s.get('arch', '?'):<8} "
                     f"{(str(rt.get('name')) + ' ' + str(rt.get('version')))[:24]:<24} "
                     f"{str(model.get('name', '-'))[:24]:<24} {str(model.get('sha256', '-'))[:12]:<12} "
                     f"{groups[:40]}")
    return "\n".join(lines)


def compare_summary(comparison: Any, model: str) -> str:
    """`edgeq compare`: one row per runtime, then the first diverging op of each that parts."""
    c = comparison.to_dict()
    lines = [f"edgeq compare: {model}, {c['samples']} samples, reference {c['reference']} "
             f"(tolerance {c['tolerance_lsb']} LSB)", "",
             f"{'runtime':<15} {'version':<22} {'max |diff| LSB':>14}  {'SQNR vs float':>13}  task"]
    for r in c["runtimes"]:
        if not r["runs"]:
            lines.append(f"{r['runtime']:<15} {'':<22} FAILS: {r['error']}")
            continue
        worst = max(r["max_abs_diff_lsb"], default=0)
        diff = "reference" if r["runtime"] == c["reference"] else (
            (f"{worst}" if isinstance(worst, int) else f"{worst:.3g} (float)")
            + ("" if r["within_tolerance"] else " (beyond)"))
        sqnr = f"{min(r['sqnr_db_vs_float']):.2f} dB" if r["sqnr_db_vs_float"] else "-"
        task = f"{r['task']['metric']} {r['task']['value']:.4f}" if r["task"] else ""
        lines.append(f"{r['runtime']:<15} {r['version'][:22]:<22} {diff:>14}  {sqnr:>13}  {task}")
    for r in comparison.others:
        if r.divergence:
            lines += ["", *divergence_lines(r.divergence)]
    lines += [f"note: {d}" for d in c["diagnostics"]]
    return "\n".join(lines)


def divergence_lines(d: Any) -> list[str]:
    """The diverging op: attributes, every input and output with dtype, scales and |diff|."""
    lines = [d.line()]
    if d.options:
        lines.append("  options  " + " ".join(f"{k}={v}" for k, v in d.options.items()))
    from edgeq.study.compare import short_name

    lines += [f"  in  {k}  {t.describe()}  '{short_name(t.name)}'" for k, t in enumerate(d.inputs)]
    for k, t in enumerate(d.outputs):
        lines.append(f"  out {k}  {t.describe()}  '{short_name(t.name)}'")
        if t.histogram:
            lines.append("          share of elements by |diff| LSB: " + ", ".join(
                f"{b}: {100 * v:.1f}%" for b, v in t.histogram.items()))
    lines += [f"  why      {h}" for h in d.hints]
    return lines


def rollout_summary(report: Any, every_device: bool = False) -> str:
    """`edgeq rollout`: state and why, each wave's gate values, the devices that need a look
    (every device with `every_device`)."""
    r = report.to_dict()
    counts = ", ".join(f"{n} {state}" for state, n in r["counts"].items())
    lines = [f"rollout {r['rollout_id']}: {r['state']} - {r['reason']}",
             f"model sha256 {r['model_sha256'][:12]}, {len(r['devices'])} devices: {counts} "
             f"({r['seconds']:.1f} s)"]
    for w in r["waves"]:
        gates = ", ".join(f"{k} {v}" for k, v in w.items()
                          if k not in ("wave", "devices", "failed", "finished", "breach"))
        lines.append(f"  wave {w['wave']}: {w['devices']} devices, {w['failed']} of "
                     f"{w['finished']} finished failed{'; ' + gates if gates else ''}"
                     f"{'; HALT: ' + w['breach'] if w['breach'] else ''}")
    shown = [d for d in r["devices"] if every_device or d["state"] not in ("verified",)]
    for d in shown[:None if every_device else 20]:
        lines.append(f"  {d['device']:<24} wave {d['wave']:>2}  {d['state']:<12} "
                     f"{(d['message'] or '')[:90]}")
    if len(shown) > 20 and not every_device:
        lines.append(f"  ... {len(shown) - 20} more (`edgeq rollout status {r['rollout_id']}`)")
    return "\n".join(lines)


def firmware_summary(report: Any) -> str:
    """`edgeq firmware run`: verdict, sizes, arena, per-output differences, instructions."""
    r = report.to_dict()
    lines = [f"edgeq firmware run: {r['target']} ({r['kernels']}): "
             f"{'PASS' if r['passed'] else 'FAIL'}, max |diff| {r['max_diff_lsb']} LSB vs the "
             f"golden outputs over {r['golden_samples']} samples (tolerance {r['tolerance_lsb']})",
             f"flash {r['flash_bytes']:,} B, RAM {r['ram_bytes']:,} B, arena used "
             f"{r['arena_used_bytes']:,} of {r['arena_bytes']:,} B",
             "per output max |diff| LSB: " + ", ".join(map(str, r["output_max_diff_lsb"]))]
    if r["instructions_per_inference"]:
        n = r["instructions_per_inference"]
        lines.append(f"instructions per inference (QEMU -icount): {min(n):,} - {max(n):,} over "
                     f"{len(n)} runs")
    lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items()))
    return "\n".join(lines)
