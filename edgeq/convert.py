"""`edgeq convert`: model + calibration data -> full-integer .tflite + report.json (+ plan.json).

Pipeline: load -> calibrate (once) -> choose precisions -> kernel truth -> quantise -> verify
-> evaluate vs float -> TFLite Micro check -> write OUT atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.runtimes import default_tflm_arena
from edgeq.errors import InputError
from edgeq.fsutil import atomic_output_dir, check_output_dir
from edgeq.model.inputs import load_inputs, write_contract
from edgeq.model.load import FloatModel
from edgeq.model.rewrite import Rewritten
from edgeq.quant.calibrate import CalibrationMethod
from edgeq.quant.opspec import select_ops
from edgeq.quant.plan import Plan, plan_indices
from edgeq.quant.quantize import Precision
from edgeq.quant.session import Quantized, QuantSession, resolve_precisions
from edgeq.reports import ConvertReport, TflmCheck
from edgeq.study.compare import compare_runtimes, stack_samples
from edgeq.study.evaluate import Outputs, compare, run_model
from edgeq.study.measure import measure_latency, raw_sample

log = logging.getLogger("edgeq")
MODES = ("int8", "int16x8", "mixed")
TFLM_CHECK_SAMPLES = 16


@dataclass(frozen=True)
class ConvertConfig:
    """Everything `edgeq convert` needs; the CLI only fills this in."""

    model: Path
    out: Path | None
    calib: Path
    eval: Path | None = None
    mode: str | None = None  # None: mixed when int16 ops or a plan are given, else int8
    int16: tuple[str, ...] = ()
    plan: Path | None = None
    strict: bool = False
    calibration: str | None = None  # None: the plan's, else minmax
    rewrites: tuple[str, ...] | None = None  # None: the exact defaults, or the plan's rewrites
    show_progress: bool = True
    tolerance: int | None = None  # TFLM vs LiteRT, LSB (default: by output dtype)
    cmsis_nn: bool = False  # int16 FULLY_CONNECTED with per-tensor weights, as CMSIS-NN needs

    def resolved_mode(self) -> str:
        if self.mode is None:
            return "mixed" if (self.int16 or self.plan) else "int8"
        if self.mode not in MODES:
            raise InputError(f"unknown mode '{self.mode}'; expected one of {', '.join(MODES)}")
        if self.mode != "mixed" and (self.int16 or self.plan):
            raise InputError(f"--int16/--plan choose ops for --mode mixed, not --mode {self.mode}")
        if self.mode == "mixed" and not (self.int16 or self.plan):
            raise InputError("--mode mixed needs the ops to put in int16: --int16 OPSPEC (an op "
                             "type such as SOFTMAX, or a regex on op names) or --plan plan.json")
        return self.mode


@dataclass(frozen=True)
class ConvertResult:
    """The report, the quantised model and its plan."""

    report: ConvertReport
    tflite: bytes
    plan: Plan

    @property
    def exit_code(self) -> int:
        """1 when --strict found problems."""
        return 1 if self.report.problems else 0


def convert(cfg: ConvertConfig) -> ConvertResult:
    """Run the whole conversion; writes OUT only if every step succeeded."""
    started = time.perf_counter()
    mode = cfg.resolved_mode()
    if cfg.out is not None:
        check_output_dir(cfg.out)  # before any work: never after minutes of it
    plan_in = Plan.load(cfg.plan) if cfg.plan else None
    method = CalibrationMethod.parse(cfg.calibration or (plan_in.calibration if plan_in else "minmax"))
    loaded = load_inputs(cfg.model, cfg.calib, cfg.eval, _rewrites(cfg, plan_in))
    model, calib, evald = loaded.model, loaded.calib, loaded.eval
    log.info("loaded %s (%s): %d inputs, %d outputs, float %d bytes", model.source, model.kind,
             len(model.inputs), len(model.outputs), len(model.tflite))
    session = QuantSession(model, calib, method, cfg.show_progress, cmsis_nn=cfg.cmsis_nn)
    log.info("calibrated (%s) on %d samples in %.2f s", method, len(calib), session.calibration_s)
    requested, plan_default = _requested_int16(cfg, session, plan_in)
    wanted, default = resolve_precisions(session, mode, requested)
    default = plan_default or default
    allowed, warnings = session.supported_int16(wanted)
    warnings = session.calibration_notes + warnings
    t0 = time.perf_counter()
    quantized = session.quantize(allowed, default)
    quantize_s = time.perf_counter() - t0
    log.info("quantised (%s, %d int16 ops) in %.2f s: %d bytes", mode,
             len(quantized.int16_ops()), quantize_s, len(quantized.tflite))
    warnings += [f"{o.op.op} '{o.op.name}' (node {o.op.index}): {o.reason}"
                 for o in quantized.outcomes if o.reason and o.requested is Precision.INT16]
    data = evald or calib
    t0 = time.perf_counter()
    float_out = run_model(model.tflite, data, cfg.show_progress, "float model", xnnpack=True)
    quant_out = run_model(quantized.tflite, data, cfg.show_progress, "quantised model")
    metrics = compare(float_out, quant_out, [s.name for s in model.outputs], data.y)
    metrics["data"] = "eval" if evald else "calib"
    metrics["samples"] = len(data)
    evaluate_s = time.perf_counter() - t0
    log.info("evaluated on %d %s samples in %.2f s: min output SQNR %.2f dB", len(data),
             metrics["data"], evaluate_s, metrics["sqnr_db"])
    tflm = tflm_check(quantized.tflite, quant_out, float_out, data.y, cfg.tolerance)
    log.info("TFLite Micro: %s", "runs" if tflm.runs else f"fails ({tflm.error})")
    plan = Plan.for_ops(session.ops, [o.float_op for o in quantized.int16_ops()],
                        _plan_metrics(metrics), default, loaded.rewritten.names, str(method))
    if mode == "mixed":
        versus = against_int16x8(session, quantized, data.sample(0))
        if versus["loses"]:
            warnings.append(versus["text"])
            log.warning(versus["text"])
    timing = {"calibrate": round(session.calibration_s, 3), "quantize": round(quantize_s, 3),
              "evaluate": round(evaluate_s, 3), "total": round(time.perf_counter() - started, 3)}
    report = build_report(mode, method, model, session, quantized, metrics, tflm, warnings,
                          loaded.rewritten, timing, versus if mode == "mixed" else None)
    if cfg.strict:
        report = replace(report, strict=True, problems=tuple(strict_problems(report)))
    result = ConvertResult(report, quantized.tflite, plan)
    if cfg.out is not None:
        write_outputs(cfg.out, result)
    return result


def _rewrites(cfg: ConvertConfig, plan: Plan | None) -> tuple[str, ...] | None:
    """A plan reproduces its model: its own rewrites, plus any the user adds."""
    if plan is None:
        return cfg.rewrites
    return (cfg.rewrites or ()) + plan.rewrites


def _requested_int16(cfg: ConvertConfig, session: QuantSession,
                     plan: Plan | None) -> tuple[set[int], Precision | None]:
    """Ops asked for by --int16 and --plan, and the plan's default precision if it has one."""
    chosen = select_ops(cfg.int16, session.ops) if cfg.int16 else set()
    if plan is None:
        return chosen, None
    return chosen | plan_indices(plan, session.ops, str(cfg.plan)), Precision(plan.default)


def _plan_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {"sqnr_db": metrics["sqnr_db"]}
    if metrics.get("task"):
        out[metrics["task"]["metric"]] = metrics["task"]["value"]
    return out


def against_int16x8(session: QuantSession, mixed: Quantized, float_sample: list[np.ndarray],
                    runs: int = 100) -> dict[str, Any]:
    """Size and latency of a mixed plan against all-int16x8: every int8<->int16 boundary adds a
    QUANTIZE op, and a plan with many of them can be bigger and slower than int16 everywhere."""
    wanted, default = resolve_precisions(session, "int16x8", set())
    allowed, _ = session.supported_int16(wanted, quiet=True)
    full = session.quantize(allowed, default)
    ours = measure_latency(mixed.tflite, raw_sample(mixed.tflite, float_sample), runs)
    theirs = measure_latency(full.tflite, raw_sample(full.tflite, float_sample), runs)
    boundaries = mixed.requantize_ops
    faster = ours.ratio_to(theirs) < 1.0
    loses = len(mixed.tflite) >= len(full.tflite) and not faster
    text = (f"this mixed plan ({len(mixed.int16_ops())} int16 ops, {boundaries} int8<->int16 "
            f"QUANTIZE boundaries) is {len(mixed.tflite):,} bytes and {ours.median_ms:.4f} ms "
            f"against all-int16x8's {len(full.tflite):,} bytes and {theirs.median_ms:.4f} ms "
            f"(LiteRT, 1 thread): " + ("bigger and no faster: use --mode int16x8 instead" if loses
                                       else "smaller" if len(mixed.tflite) < len(full.tflite)
                                       else "bigger but faster"))
    return {"requantize_ops": boundaries, "bytes": len(mixed.tflite),
            "int16x8_bytes": len(full.tflite), "latency_ms": list((ours.median_ms, *ours.spread)),
            "int16x8_latency_ms": list((theirs.median_ms, *theirs.spread)), "loses": loses,
            "text": text}


def tflm_check(tflite: bytes, quant_out: Outputs, float_out: Outputs | None = None,
               y: np.ndarray | None = None, tolerance: int | None = None) -> TflmCheck:
    """Invoke the model in the real TFLM interpreter and compare it, in LSB, with LiteRT's
    reference kernels (the arithmetic TFLM implements) and with the builtin kernels edgeq
    evaluates with, and both with the float model. Beyond tolerance every op is compared to
    name where they part, or to tell rounding drift from a real divergence."""
    samples = quant_out.raw_inputs[:TFLM_CHECK_SAMPLES]
    raw = stack_samples(samples)
    floats = [v[: len(samples)] for v in float_out.values] if float_out else None
    labels = y[: len(samples)] if y is not None else None
    runtimes: tuple[str, ...] = ("litert-ref", "tflm", "litert-builtin")
    comparison = compare_runtimes(tflite, raw, runtimes, False, tolerance, floats, labels)
    reference_name = "LiteRT reference kernels"
    if comparison.result("litert-ref").error:  # e.g. LiteRT's int8 SUM reference kernel bug
        reference_name = (f"LiteRT builtin kernels (its reference kernels fail: "
                          f"{comparison.result('litert-ref').error[:160]})")
        runtimes = ("litert-builtin", "tflm")
        comparison = compare_runtimes(tflite, raw, runtimes, False, tolerance, floats, labels)
    if not comparison.ok and not comparison.result("tflm").error:
        comparison = compare_runtimes(tflite, raw, runtimes, True, tolerance, floats, labels)
    reference, tflm = comparison.result(runtimes[0]), comparison.result("tflm")
    builtin = comparison.result("litert-builtin")
    check = TflmCheck(not tflm.error, len(samples), default_tflm_arena(len(tflite)), tflm.version,
                      comparison.tolerance_lsb, error=tflm.error or None, reference=reference_name)
    if tflm.error:
        return check
    sqnr = {"litert_reference": min(reference.sqnr_db, default=None),
            "tflm": min(tflm.sqnr_db, default=None),
            "litert_builtin": min(builtin.sqnr_db, default=None)} if floats else None
    return replace(
        check, max_abs_diff_lsb_per_output=tuple(tflm.max_diff_lsb),
        within_tolerance=tflm.ok, rounding_drift=tflm.drift, sqnr_db_vs_float=sqnr,
        first_divergence=tflm.divergence,
        builtin_max_abs_diff_lsb=max(builtin.max_diff_lsb, default=0),
        builtin_within_tolerance=builtin.ok, builtin_first_divergence=builtin.divergence,
        diagnostics=tuple(comparison.diagnostics))


def build_report(mode: str, method: CalibrationMethod, model: FloatModel,
                 session: QuantSession, quantized: Quantized, metrics: dict[str, Any],
                 tflm: TflmCheck, warnings: list[str], rewritten: Rewritten,
                 timing: dict[str, float], versus: dict[str, Any] | None) -> ConvertReport:
    """The report of one conversion (its I/O read back from the quantised model)."""
    from device_agent.runtimes import LiteRTRuntime

    with LiteRTRuntime(quantized.tflite) as rt:
        inputs, outputs = tuple(rt.inputs()), tuple(rt.outputs())
    return ConvertReport(
        source=model.source, source_kind=model.kind, mode=mode, calibration=str(method),
        calibration_samples=len(session.calib), model_bytes=len(quantized.tflite),
        float_bytes=len(model.tflite), sha256=hashlib.sha256(quantized.tflite).hexdigest(),
        inputs=inputs, outputs=outputs, outcomes=tuple(quantized.outcomes),
        int16_ops=len(quantized.int16_ops()), requantize_ops=quantized.requantize_ops,
        metrics=metrics, tflm=tflm, warnings=tuple(warnings), rewrites=rewritten,
        timing_s=timing, mixed_vs_int16x8=versus)


def strict_problems(report: ConvertReport) -> list[str]:
    """What --strict rejects: any op that is not integer-only, or a model TFLM cannot run."""
    problems = [f"{o.op.op} '{o.op.name}' (node {o.op.index}) is not integer-only: {o.reason}"
                for o in report.float_ops]
    tflm = report.tflm
    if not tflm.runs:
        problems.append(f"TFLite Micro cannot run the model: {tflm.error or ''}")
    elif not tflm.within_tolerance:
        where = tflm.first_divergence
        problems.append(f"TFLite Micro differs from {tflm.reference.split(' (')[0]} by "
                        f"{tflm.max_abs_diff_lsb} LSB (tolerance {tflm.tolerance_lsb})"
                        + (f", first at op {where.op_index} {where.op}" if where else ""))
    return problems


def write_outputs(out: Path, result: ConvertResult) -> None:
    """OUT/model.tflite, OUT/report.json, OUT/plan.json — all or nothing."""
    with atomic_output_dir(out, "convert") as tmp:
        (tmp / "model.tflite").write_bytes(result.tflite)
        (tmp / "report.json").write_text(json.dumps(result.report.to_dict(), indent=2) + "\n")
        (tmp / "plan.json").write_text(json.dumps(result.plan.to_dict(), indent=2) + "\n")
        write_contract(tmp, result.report.rewrites.contracts)


