"""`edgeq analyze`: which ops (and groups of ops) need int16, measured both ways.

One-op-at-a-time sensitivity can be blind (measured; the README's search section): an op alone
in int16 between int8 neighbours may gain nothing or even lose, while the whole region in int16
gains a lot. So
every candidate is measured twice — upgraded alone from all-int8 and downgraded alone from
all-int16x8 — and candidates include groups (Keras layers and blocks, from op name scopes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.preprocessing import Contract
from edgeq.fsutil import atomic_output_dir
from edgeq.model.data import Dataset
from edgeq.model.graph import OpInfo, input_tensor_names
from edgeq.model.inputs import load_inputs
from edgeq.model.rewrite import Rewritten, rewrite
from edgeq.progress import RunProgress, progress
from edgeq.quant.calibrate import CalibrationMethod
from edgeq.quant.quantize import Precision
from edgeq.quant.session import QuantSession
from edgeq.study.measure import DEFAULT_LATENCY, Evaluator, LatencySetting, Metric, Point, tensor_sqnr
from edgeq.study.roles import op_roles, within

log = logging.getLogger("edgeq")
RECOVERED_SHARE = 0.9  # "a small plan fixes it": this share of the int8 -> int16x8 gap ...
SMALL_SIZE = 1.10  # ... at no more than this much int8's size
SMALL_LATENCY = 1.5  # ... and latency (as the study times it)
ATTRIBUTION_SAMPLES = 32


@dataclass(frozen=True)
class Candidate:
    """Ops that go to int16 together: one op, or a group named by a common scope."""

    name: str
    kind: str  # op | group
    ops: frozenset[int]

    def to_dict(self, ops: dict[int, OpInfo]) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ops": sorted(self.ops),
                "op_types": sorted({ops[i].op for i in self.ops})}


MAX_OP_CANDIDATES = 48


def build_candidates(ops: list[OpInfo], allowed: set[int], groups: bool = True) -> list[Candidate]:
    """Each allowed op, every name scope (layer, block) holding 2+ but not all of them, and
    every op role (layernorm, residual stream, softmax, ...). A model with more than
    MAX_OP_CANDIDATES int16-capable ops (a real transformer) gets its roles only: 3 runs per
    candidate, and one op of 150 moves nothing measurable."""
    by_index = {op.index: op for op in ops}
    roles = [Candidate(f"role {name}", "role", members)
             for name, members in within(op_roles(ops), allowed).items()
             if len(members) < len(allowed) or len(allowed) > MAX_OP_CANDIDATES]
    if groups and len(allowed) > MAX_OP_CANDIDATES:
        log.info("%d ops can be int16: candidates are the %d op roles (%s), not single ops",
                 len(allowed), len(roles), ", ".join(c.name[5:] for c in roles))
        return roles
    singles = [Candidate(f"{by_index[i].op} {_short(by_index[i])}", "op", frozenset({i}))
               for i in sorted(allowed)]
    if not groups:
        return singles
    scopes: dict[str, set[int]] = {}
    for i in allowed:
        parts = _scope_parts(by_index[i])
        for depth in range(1, len(parts)):
            scopes.setdefault("/".join(parts[:depth]), set()).add(i)
    seen: set[frozenset[int]] = set()
    group_list = []
    for scope in sorted(scopes, key=lambda s: (s.count("/"), s)):  # outermost name wins
        members = frozenset(scopes[scope])
        if 2 <= len(members) < len(allowed) and members not in seen:
            seen.add(members)
            group_list.append(Candidate(scope, "group", members))
    return singles + group_list + [r for r in roles if r.ops not in seen and len(r.ops) > 1]


def _scope_parts(op: OpInfo) -> list[str]:
    """Name scopes of an op, without the model's own top scope (`functional/...`)."""
    parts = op.stable_name.split(";")[0].split("/")
    return parts[1:] if len(parts) > 2 else parts


def _short(op: OpInfo) -> str:
    return "/".join(_scope_parts(op)[-3:])


FAILED_SQNR_DB = -60.0  # a plan that does not run, for ranking only (never reported as a value)


def _db(point: Point) -> float:
    return FAILED_SQNR_DB if point.error else point.sqnr_db


def upgrade_cost(base: Point, upgraded: Point) -> float:
    """Relative size + latency increase from `base` to `upgraded` (floored: never free). A
    plan that does not run costs infinitely much; from a base that does not run, 1."""
    if upgraded.error:
        return float("inf")
    if base.error:
        return 1.0
    size = (upgraded.size_bytes - base.size_bytes) / base.size_bytes
    latency = upgraded.latency.ratio_to(base.latency) - 1.0  # 0 inside timing noise
    return max(size, 0.0) + max(latency, 0.0) + 1e-3


@dataclass
class Sensitivity:
    """Endpoints and both-way measurements of every candidate."""

    int8: Point
    int16: Point
    candidates: list[Candidate]
    upgraded: list[Point]  # candidate alone in int16, rest int8
    downgraded: list[Point]  # candidate alone in int8, rest int16
    data: Dataset  # what they were measured on (a screening subset in a search)

    @property
    def gap(self) -> float:
        """Output-SQNR gap between all-int16x8 and all-int8 (dB)."""
        return self.int16.sqnr_db - self.int8.sqnr_db

    def gain(self, k: int) -> float:
        """dB gained upgrading candidate k alone + dB lost downgrading it alone."""
        return ((_db(self.upgraded[k]) - _db(self.int8))
                + (_db(self.int16) - _db(self.downgraded[k])))

    def cost(self, k: int) -> float:
        """Relative cost of candidate k's upgrade from all-int8."""
        return upgrade_cost(self.int8, self.upgraded[k])

    def ranked(self) -> list[int]:
        """Candidate indices, most gain per cost first."""
        return sorted(range(len(self.candidates)),
                      key=lambda k: (-self.gain(k) / self.cost(k), -self.gain(k), k))


def allowed_int16(session: QuantSession) -> tuple[set[int], list[str]]:
    """Float ops whose int16 kernels exist in LiteRT and TFLM and that the quantizer makes int16."""
    wanted = {op.index for op in session.float_ops}
    allowed, warnings = session.supported_int16(wanted)
    probe = session.quantize(allowed, Precision.INT16)
    really = {o.float_op.index for o in probe.int16_ops()}
    return allowed & really, warnings


def measure_sensitivity(evaluator: Evaluator, candidates: list[Candidate], allowed: set[int],
                        show_progress: bool = True,
                        endpoints: tuple[Point, Point] | None = None) -> Sensitivity:
    """2 endpoint runs (unless `endpoints`, all-int8 and all-int16x8 measured by `evaluator`
    already, are given) + 2 runs per candidate."""
    int8, int16 = endpoints or (
        evaluator.run(set(), Precision.INT8, "all-int8", keep_model=True),
        evaluator.run(allowed, Precision.INT16, "all-int16x8", keep_model=True))
    upgraded, downgraded = [], []
    for c in progress(candidates, "sensitivity", show_progress):
        upgraded.append(evaluator.run(c.ops, Precision.INT8, f"+{c.name}"))
        downgraded.append(evaluator.run(allowed - c.ops, Precision.INT16, f"-{c.name}"))
    return Sensitivity(int8, int16, candidates, upgraded, downgraded, evaluator.data)


def attribute_errors(session: QuantSession, data: Dataset, sens: Sensitivity) -> list[dict[str, Any]]:
    """Each graph input and op output vs the float model's tensor, in all-int8 and all-int16x8,
    with its calibrated range: a wide range (large int8 step) is the usual culprit."""
    tensors = [("INPUT", -1, name) for name in input_tensor_names(session.model.tflite)]
    tensors += [(op.op, op.index, op.name) for op in session.ops]
    names = [name for _, _, name in tensors]
    in8, in16 = ({} if point.error else tensor_sqnr(session.model.tflite, point.tflite, data, names,
                                                    ATTRIBUTION_SAMPLES)
                 for point in (sens.int8, sens.int16))
    rows = []
    for op_type, index, name in tensors:
        stats = session.stats.get(name)
        lo, hi = (float(stats["min"].ravel()[0]), float(stats["max"].ravel()[0])) if stats else (0, 0)
        rows.append({"index": index, "op": op_type, "name": name,
                     "sqnr_db_int8": in8.get(name), "sqnr_db_int16": in16.get(name),
                     "range": [lo, hi], "int8_step": (hi - lo) / 255.0})
    return rows


@dataclass(frozen=True)
class Verdict:
    """What the int8 -> int16x8 gap looks like and what to choose: equal (int8 is enough),
    concentrated (a partial plan recovers most of the gap cheaply), cheap (only all-int16x8 does,
    and it costs little) or spread (recovering it is expensive)."""

    kind: str
    text: str
    point: str | None = None  # the partial plan, for `concentrated`
    int16_ops: int | None = None
    size_ratio: float | None = None
    latency_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def verdict(points: list[Point], int8: Point, int16: Point, metric: Metric) -> Verdict:
    """The Verdict on these points (see Verdict)."""
    if int8.error or int16.error:
        broken = int8 if int8.error else int16
        return Verdict("fails", f"{broken.label} does not run ({broken.error}); only the plans "
                                "that ran are compared")
    gap = int16.score - int8.score
    tolerance = metric.default_tolerance(int16.score)
    if gap <= tolerance:
        return Verdict("equal", f"int8 is within {tolerance:g} {metric.unit} of int16x8 here: "
                                "choose int8".replace("  ", " "))
    good = [p for p in points if p.score - int8.score >= RECOVERED_SHARE * gap]

    def ratios(p: Point) -> tuple[float, float]:  # latency 1.0 when inside timing noise
        return p.size_bytes / int8.size_bytes, p.latency.ratio_to(int8.latency)

    cheap = [p for p in good if ratios(p)[0] <= SMALL_SIZE and ratios(p)[1] <= SMALL_LATENCY]
    partial = [p for p in cheap if p.int16_ops < int16.int16_ops]
    share = f"{RECOVERED_SHARE:.0%} of the int8 -> int16x8 gap"
    if partial:
        p = min(partial, key=lambda p: (p.int16_ops, p.size_bytes))
        size, latency = ratios(p)
        return Verdict("concentrated",
                       f"error is concentrated: int16 on {p.int16_ops} of {int16.int16_ops} ops "
                       f"('{p.label}') recovers {share} at {size:.2f}x int8 size, "
                       f"{latency:.2f}x latency", p.label, p.int16_ops, round(size, 3),
                       round(latency, 3))
    if cheap:
        size, latency = ratios(cheap[0])
        return Verdict("cheap", f"only int16 nearly everywhere recovers {share}, and int16x8 "
                                f"costs little here ({size:.2f}x size, {latency:.2f}x latency): "
                                "choose int16x8", size_ratio=round(size, 3),
                       latency_ratio=round(latency, 3))
    p = min(good, key=lambda p: p.size_bytes)
    size, latency = ratios(p)
    return Verdict("spread", f"error is spread: recovering {share} takes {size:.2f}x int8 size "
                             f"and {latency:.2f}x latency ('{p.label}'); choose int8 or int16x8",
                   size_ratio=round(size, 3), latency_ratio=round(latency, 3))


def sensitivity_report(study: Study, sens: Sensitivity,
                       attribution: list[dict[str, Any]]) -> dict[str, Any]:
    """sensitivity.json: endpoints, per-candidate both-way numbers and costs, attribution."""
    session, evaluator, allowed = study.session, study.evaluator, study.allowed
    ops = {op.index: op for op in session.ops}
    rows = []
    for k in sens.ranked():
        up, down = sens.upgraded[k], sens.downgraded[k]
        row = sens.candidates[k].to_dict(ops)
        if up.error or down.error or sens.int8.error or sens.int16.error:
            failed = [p for p in (up, down, sens.int8, sens.int16) if p.error]
            row.update({"error": f"{failed[0].label}: {failed[0].error}",
                        "gain_per_cost": round(sens.gain(k) / sens.cost(k), 3)})
            rows.append(row)
            continue
        row.update({
            "upgrade_gain_db": round(up.sqnr_db - sens.int8.sqnr_db, 3),
            "downgrade_loss_db": round(sens.int16.sqnr_db - down.sqnr_db, 3),
            "upgrade_metric_delta": round(up.score - sens.int8.score, 4),
            "downgrade_metric_delta": round(down.score - sens.int16.score, 4),
            "cost": {"bytes": up.size_bytes - sens.int8.size_bytes,
                     "latency_ms": round(up.latency_ms - sens.int8.latency_ms, 5),
                     "activation_bytes": up.activation_bytes - sens.int8.activation_bytes,
                     "requantize_ops": up.requantize_ops - sens.int8.requantize_ops},
            "gain_per_cost": round(sens.gain(k) / sens.cost(k), 3)})
        rows.append(row)
    not_candidates = [{"index": op.index, "op": op.op, "name": op.name,
                       "why": session.kernels.why(op.op) or "the quantizer has no int16 rule"}
                      for op in session.float_ops if op.index not in allowed]
    return {
        "model": session.model.source,
        "metric": evaluator.metric.kind.value,
        "float_value": evaluator.float_value(),
        "data": {"source": evaluator.data.source, "samples": len(evaluator.data)},
        "endpoints": {"all_int8": sens.int8.to_dict(), "all_int16x8": sens.int16.to_dict()},
        "gap_db": round(sens.gap, 3),
        "verdict": verdict([sens.int8, sens.int16, *sens.upgraded, *sens.downgraded], sens.int8,
                           sens.int16, evaluator.metric).to_dict(),
        "candidates": rows,
        "not_candidates": not_candidates,
        "attribution": attribution,
        "runs": evaluator.runs,
        "timing_s": {"load": round(study.load_s, 3), "calibrate": round(session.calibration_s, 3),
                     "runs": round(evaluator.run_seconds, 3),
                     "total": round(time.perf_counter() - study.started, 3)},
    }


@dataclass
class Study:
    """What analyze and search share: one calibration, the eval data, the candidates."""

    session: QuantSession
    evaluator: Evaluator
    allowed: set[int]
    candidates: list[Candidate]
    warnings: list[str]
    started: float
    rewritten: Rewritten
    load_s: float = 0.0  # loading (Keras -> float .tflite) and rewriting, before calibration


def prepare(model_path: Path, calib_path: Path, eval_path: Path | None, metric: str = "auto",
            calibration: str = "minmax", groups: bool = True, show_progress: bool = True,
            rewrites: tuple[str, ...] | None = None, latency_runs: int = 100,
            latency: str = DEFAULT_LATENCY) -> Study:
    """Load (and rewrite), calibrate once, find the int16-capable ops and the candidates."""
    started = time.perf_counter()
    loaded = load_inputs(model_path, calib_path, eval_path, rewrites)
    model, calib = loaded.model, loaded.calib
    load_s = time.perf_counter() - started
    data = loaded.eval or calib
    chosen = Metric.choose(metric, data)
    method = CalibrationMethod.parse("minmax" if calibration == "auto" else calibration)
    session = QuantSession(model, calib, method, show_progress)
    allowed, warnings = allowed_int16(session)
    candidates = build_candidates(session.ops, allowed, groups)
    log.info("%d ops, %d can be int16: %d candidates (%d groups)", len(session.ops), len(allowed),
             len(candidates), sum(1 for c in candidates if c.kind == "group"))
    evaluator = Evaluator(session, data, chosen, latency_runs, LatencySetting.parse(latency))
    return Study(session, evaluator, allowed, candidates, warnings, started, loaded.rewritten,
                 load_s)


def analyze(model_path: Path, calib_path: Path, eval_path: Path | None = None,
            metric: str = "auto", calibration: str = "minmax", groups: bool = True,
            show_progress: bool = True, rewrites: tuple[str, ...] | None = None,
            latency: str = DEFAULT_LATENCY) -> dict[str, Any]:
    """Sensitivity of every candidate both ways, costs, error attribution and a verdict."""
    study = prepare(model_path, calib_path, eval_path, metric, calibration, groups, show_progress,
                    rewrites, latency=latency)
    bar = RunProgress(2 * len(study.candidates) + 2, "analyze", show_progress)
    study.evaluator.progress = bar
    try:
        sens = measure_sensitivity(study.evaluator, study.candidates, study.allowed, False)
    finally:
        bar.close()
    attribution = attribute_errors(study.session, sens.data, sens)
    report = sensitivity_report(study, sens, attribution)
    report["warnings"] = study.warnings
    report["rewrites"] = study.rewritten.to_dict()
    report["hints"] = rewrite_hints(study, report)
    return report


def preprocessing_probe(study: Study) -> list[Contract]:
    """The contracts `--rewrite preprocessing` would move out of this model ([] when it is
    applied already or finds nothing)."""
    if "preprocessing" in study.rewritten.names:
        return []
    return rewrite(study.session.model, ("preprocessing",), study.session.calib,
                   quiet=True).contracts


def rewrite_hints(study: Study, report: dict[str, Any]) -> list[str]:
    """Rewrites that would help this model and are not applied yet."""
    hints = []
    blocked = sorted({n["op"] for n in report["not_candidates"]} & {"NEG", "SQUARED_DIFFERENCE"})
    if blocked:
        hints.append(f"{' and '.join(blocked)} cannot be int16 (no quantizer rule); "
                     "--rewrite neg,squared-difference replaces them by equivalent ops that can")
    model = study.session.model
    for c in preprocessing_probe(study):
        name = next(i for s, i in zip(model.inputs, input_tensor_names(model.tflite))
                    if s.name == c.input)
        lo, hi = (float(study.session.stats[name][k].ravel()[0]) for k in ("min", "max"))
        hints.append(f"input '{c.input}' (raw range [{lo:.4g}, {hi:.4g}]) is normalised inside "
                     f"the model as {c.formula()}: --rewrite preprocessing moves that out into "
                     "a preprocessing contract so the quantised input holds normalised values")
    return hints


def write_analysis(out: Path, report: dict[str, Any]) -> None:
    """OUT/sensitivity.json, atomically."""
    with atomic_output_dir(out, "analyze") as tmp:
        (tmp / "sensitivity.json").write_text(json.dumps(report, indent=2) + "\n")


def analysis_summary(report: dict[str, Any], top: int = 15) -> str:
    """The most sensitive candidates as a table, the worst tensors, and the verdict."""
    lines = [f"edgeq analyze: {report['model']} ({report['metric']} on {report['data']['samples']} "
             "samples)"]
    for label, key in (("all-int8", "all_int8"), ("all-int16x8", "all_int16x8")):
        e = report["endpoints"][key]
        lines.append(f"{label:<12} does not run: {e['error']}" if "error" in e else
                     f"{label:<12} SQNR {e['sqnr_db']:6.2f} dB  {report['metric']} {e['value']:.4f}  "
                     f"{e['bytes']:,} bytes  {e['latency_ms']:.4f} ms")
    lines.append("")
    width = max([len(r["name"]) for r in report["candidates"][:top]] + [9])
    lines.append(f"{'candidate':<{width}}  {'ops':>3}  {'up dB':>6}  {'down dB':>7}  "
                 f"{'+bytes':>6}  {'+ms':>7}  {'requant':>7}")
    for r in report["candidates"][:top]:
        if "error" in r:
            lines.append(f"{r['name']:<{width}}  {len(r['ops']):>3}  does not run: {r['error'][:80]}")
            continue
        c = r["cost"]
        lines.append(f"{r['name']:<{width}}  {len(r['ops']):>3}  {r['upgrade_gain_db']:>6.2f}  "
                     f"{r['downgrade_loss_db']:>7.2f}  {c['bytes']:>6}  {c['latency_ms']:>7.4f}  "
                     f"{c['requantize_ops']:>7}")
    if len(report["candidates"]) > top:
        lines.append(f"... {len(report['candidates']) - top} more in sensitivity.json")
    worst = sorted((a for a in report["attribution"] if a["sqnr_db_int8"] is not None),
                   key=lambda a: a["sqnr_db_int8"])[:5]
    lines += ["", "tensors with the largest int8 error (SQNR vs float, int8 / int16, range):"]
    for a in worst:
        s16 = a["sqnr_db_int16"]
        lines.append(f"  {a['sqnr_db_int8']:6.2f} / {s16 if s16 is None else round(s16, 2)!s:>6} dB"
                     f"  [{a['range'][0]:.4g}, {a['range'][1]:.4g}]  {a['op']} {a['name'][:70]}")
    lines += [f"not int16    {n['op']} (node {n['index']}): {n['why']}"
              for n in report["not_candidates"]]
    lines += [f"hint         {h}" for h in report.get("hints", [])]
    lines += ["", f"verdict: {report['verdict']['text']}"]
    return "\n".join(lines)
