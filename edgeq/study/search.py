"""`edgeq search`: greedy int16 upgrades by gain per cost -> Pareto frontier -> plan at the
chosen point.

Runs: 2 endpoints + 2 per candidate (sensitivity both ways) + at most 1 per candidate (greedy
prefixes) = at most 3N+2 quantise-and-evaluate runs for N candidates, one calibration.
With `--reuse plan.json` only candidates touching ops the old plan's graph did not have are
re-examined, starting from the old plan's int16 ops.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import InputError, PlanError
from edgeq.fsutil import atomic_output_dir
from edgeq.model.inputs import write_contract
from edgeq.model.rewrite import Rewritten
from edgeq.progress import RunProgress, progress
from edgeq.quant.calibrate import CalibrationMethod
from edgeq.quant.plan import Plan, check_plan
from edgeq.quant.quantize import Precision
from edgeq.quant.session import QuantSession
from edgeq.study.analyze import (
    Candidate,
    Sensitivity,
    Study,
    Verdict,
    attribute_errors,
    measure_sensitivity,
    prepare,
    preprocessing_probe,
    sensitivity_report,
    upgrade_cost,
    verdict,
)
from edgeq.study.measure import (
    BUILTIN_LATENCY,
    DEFAULT_LATENCY,
    Evaluator,
    LatencySetting,
    Metric,
    Point,
    measure_latency,
    raw_sample,
)
from edgeq.study.pareto import COST_AXES, frontier, frontier_ids, plot, point_rows, points_csv

log = logging.getLogger("edgeq")


@dataclass(frozen=True)
class Constraint:
    """What the chosen point must meet. Default: metric within the default tolerance of the
    best plan measured, smallest (or fastest) such point."""

    kind: str = "max_drop"  # max_drop | max_bytes | max_latency_ms
    limit: float | None = None
    cost: str = "bytes"  # bytes | latency_ms: what "smallest" means under max_drop

    @classmethod
    def from_options(cls, max_drop: float | None, max_bytes: int | None,
                     max_latency_ms: float | None, cost: str = "bytes") -> Constraint:
        given = [(k, v) for k, v in (("max_drop", max_drop), ("max_bytes", max_bytes),
                                     ("max_latency_ms", max_latency_ms)) if v is not None]
        if len(given) > 1:
            raise InputError("give at most one of --max-drop, --max-bytes, --max-latency-ms")
        if cost not in ("bytes", "latency_ms"):
            raise InputError(f"unknown cost '{cost}'; expected bytes or latency_ms")
        if given and given[0][1] < 0:
            raise InputError(f"--{given[0][0].replace('_', '-')} must be >= 0, got {given[0][1]}")
        kind, limit = given[0] if given else ("max_drop", None)
        return cls(kind, None if limit is None else float(limit), cost)


@dataclass
class Choice:
    """The constraint resolved against the points."""

    chosen: Point | None
    best: Point  # the point that comes closest when nothing meets the constraint
    description: str

    @property
    def met(self) -> bool:
        return self.chosen is not None


def choose(points: list[Point], constraint: Constraint, reference: Point, metric: Metric) -> Choice:
    """The cheapest point within the allowed drop, or the best point within a size/latency cap.
    Plans whose model failed to run are never chosen."""
    points = [p for p in points if not p.error] or points
    if constraint.kind == "max_drop":
        drop = metric.default_tolerance(reference.score) if constraint.limit is None else constraint.limit
        floor = reference.score - drop
        cheapest = ("smallest bytes (within 1%: fastest)" if constraint.cost == "bytes"
                    else f"smallest {constraint.cost}")
        text = (f"{metric.column} within {drop:g} {metric.unit} of the best plan ({reference.label}) "
                f"(>= {_score_text(metric, floor)}), {cheapest}").replace("  ", " ")
        ok = [p for p in points if p.score >= floor - 1e-9]
        best = max(points, key=lambda p: (p.score, -p.cost(constraint.cost)))
        return Choice(_cheapest(ok, constraint.cost), best, text)
    cost = "bytes" if constraint.kind == "max_bytes" else "latency_ms"
    limit = float("inf") if constraint.limit is None else constraint.limit
    text = f"{cost} <= {limit:g}, best {metric.column}"
    ok = [p for p in points if p.cost(cost) <= limit]
    best = min(points, key=lambda p: (p.cost(cost), -p.score))
    chosen = max(ok, key=lambda p: (p.score, -p.cost(cost))) if ok else None
    return Choice(chosen, best, text)


SAME_SIZE = 0.01  # plans within 1% of the smallest qualifying bytes count as the same size


def _cheapest(points: list[Point], cost: str) -> Point | None:
    """The cheapest point; by bytes, the fastest of those within SAME_SIZE of the smallest
    (plans of one transformer differ by 0.1% in size and by 5x in latency)."""
    if not points:
        return None
    if cost != "bytes":
        return min(points, key=lambda p: (p.cost(cost), -p.score))
    smallest = min(p.size_bytes for p in points)
    same = [p for p in points if p.size_bytes <= smallest * (1 + SAME_SIZE)]
    return min(same, key=lambda p: (p.latency_ms, -p.score))


def _score_text(metric: Metric, score: float) -> str:
    """A score (higher is better) back in the metric's own unit."""
    return metric.format(metric.from_score(score))


LABEL_LEGEND = (
    "all-int8 / all-int16x8: every op int8 / every op that has an int16 kernel int16",
    "+NAME: all-int8 with NAME (one op, or a group: a layer or block) in int16 (upgrade gain)",
    "-NAME: all-int16x8 with NAME back in int8 (downgrade loss)",
    "greedy K: +NAME: all-int8 plus the first K candidates in gain-per-cost order, NAME the K-th",
)


def greedy_points(evaluator: Evaluator, candidates: list[Candidate], order: list[int],
                  base: set[int] | None = None, show_progress: bool = True) -> list[Point]:
    """Evaluate each prefix of `candidates` in `order` (on top of `base`) as an int8-default plan."""
    chosen = set(base or ())
    points: list[Point] = []
    for k in progress(order, "greedy", show_progress):
        candidate = candidates[k]
        if candidate.ops <= chosen:
            continue  # a group or op already covered: no run
        chosen |= candidate.ops
        points.append(evaluator.run(chosen, Precision.INT8,
                                    f"greedy {len(points) + 1}: +{candidate.name}"))
    return points


SCREEN_SAMPLES = 32  # eval samples of a screening run
SCREEN_AFTER_S = 5.0  # screen when one all-int16x8 evaluation on the full set takes longer


def screening(ev: Evaluator, screen: str, int16_seconds: float) -> Evaluator | None:
    """The evaluator for the sensitivity and greedy runs: the first N eval samples when
    `screen` is N; with `auto`, the first SCREEN_SAMPLES when an evaluation is slow (the
    all-int16x8 run took `int16_seconds` > SCREEN_AFTER_S: int16 matmuls on a transformer)
    and the eval set is over twice that; None: every run on the full set."""
    if screen == "off":
        return None
    n = SCREEN_SAMPLES if screen == "auto" else int(screen)
    slow = int16_seconds > SCREEN_AFTER_S and len(ev.data) > 2 * n
    if n >= len(ev.data) or (screen == "auto" and not slow):
        return None
    log.info("screening: sensitivity and greedy runs on the first %d of %d eval samples; "
             "the frontier is measured again on all of them", n, len(ev.data))
    return ev.subset(n)


def parse_screen(text: str) -> str:
    """`auto`, `off` or a sample count >= 2."""
    if text in ("auto", "off") or (text.isdigit() and int(text) >= 2):
        return text
    raise InputError(f"unknown --screen '{text}'; expected auto, off or a sample count (>= 2)")


def confirm(evaluator: Evaluator, points: list[Point]) -> list[Point]:
    """`points` with every screening point on a frontier (by bytes or latency) measured again
    on the full eval set in its place; other screening points stay, marked by `samples`."""
    full = len(evaluator.data)
    on_front = {id(p) for axis in COST_AXES for p in frontier(points, axis)}
    redo = [p for p in points if p.screened(full) and id(p) in on_front]
    if evaluator.progress is not None:
        evaluator.progress.grow(len(redo))
    again = {id(p): evaluator.run(set(p.int16), Precision(p.default), p.label) for p in redo}
    return [again.get(id(p), p) for p in points]


@dataclass
class SearchResult:
    """Every measured point, the choice, and what goes into OUT."""

    points: list[Point]
    choice: Choice
    report: SearchReport
    sensitivity: dict[str, Any] | None
    plan: Plan | None = None
    tflite: bytes = b""
    warnings: list[str] = field(default_factory=list)
    study: Study | None = None  # to evaluate more plans with the same calibration

    @property
    def exit_code(self) -> int:
        return 0 if self.choice.met else 1


def search(model_path: Path, calib_path: Path, eval_path: Path, constraint: Constraint = Constraint(),
           metric: str = "auto", calibration: str = "auto", groups: bool = True,
           reuse: Path | None = None, show_progress: bool = True,
           rewrites: tuple[str, ...] | None = None, latency: str = DEFAULT_LATENCY,
           allow_input_change: bool = False, screen: str = "auto") -> SearchResult:
    """Measure sensitivity, walk the greedy path, keep the frontier, choose a point. `latency`:
    how plans are timed (xnnpack[:THREADS], builtin; see LatencySetting). A rewrite that
    would change the model's input is measured and proposed; its points are chosen only with
    `allow_input_change`. `screen`: see `screening`."""
    old = Plan.load(reuse) if reuse else None
    auto = calibration == "auto" and old is None
    study = prepare(model_path, calib_path, eval_path, metric, calibration, groups, show_progress,
                    rewrites if old is None else (rewrites or ()) + old.rewrites, latency=latency)
    studies = range_studies(study) if old is None else {}
    tried: list[tuple[Study, Point]] = []
    start: Point | None = None  # all-int8, when the range setting was picked by measuring it
    if auto:
        study, tried, start = pick_range_setting(studies, show_progress)
    n = len(study.candidates)
    refuse_impossible(study, constraint)
    bar = RunProgress(3 * n + 2 + (1 if old else 0), "search", show_progress)
    ev = study.evaluator
    ev.progress = bar
    sens = None
    screen_runs = 0  # beyond 3N+2: the endpoints on the screening subset, the confirmations
    try:
        if old is None:
            points, sens, screen_runs = _explore(study, screen, bar, start)
            reused = None
        else:
            points, reused = _reuse(study, old, False)
    finally:
        bar.close()
    sensitivity = None if sens is None else sensitivity_report(
        study, sens, attribute_errors(study.session, sens.data, sens))
    int8, int16 = points[0], points[1]
    full = [p for p in points if not p.screened(len(ev.data))]
    owner = {id(p): study for p in full}
    proposal = None if old is not None else propose_preprocessing(
        study, model_path, calib_path, eval_path, metric, str(study.session.method), latency,
        allow_input_change)
    if proposal is not None and proposal.allowed:
        owner.update({id(p): proposal.study for p in proposal.points})
    moves: list[tuple[Study, Point]] = list(tried)
    if old is None:  # range settings as moves: the plan chosen so far (and all-int8) recalibrated
        first = _choose(full, constraint, ev.metric, int16).chosen
        again = ([] if auto else [int8]) + ([first] if first and first is not int8 else [])
        moves += calibration_moves(studies, study, again, show_progress)
    for other, point in moves:
        points.append(point)
        owner[id(point)] = other
    for other in studies.values():
        if other is not study:
            ev.runs += other.evaluator.runs
            ev.run_seconds += other.evaluator.run_seconds
    choosable = [p for p in points + list(proposal.points if proposal else ()) if id(p) in owner]
    choice = _choose(choosable, constraint, ev.metric, int16)
    report = _report(study, int8, int16, points, choice, constraint, n, reused, proposal,
                     len(moves) + (len(proposal.points) if proposal else 0) + screen_runs)
    result = SearchResult(choosable, choice, report, sensitivity, warnings=study.warnings,
                          study=study)
    if choice.chosen is not None:
        result.study = owner[id(choice.chosen)]
        result.plan, result.tflite = _materialise(result.study, choice.chosen)
    log.info("search: %d runs for %d candidates; %s", ev.runs, n, report.verdict.text)
    return result


def _explore(study: Study, screen: str, bar: RunProgress,
             int8: Point | None = None) -> tuple[list[Point], Sensitivity, int]:
    """Endpoints (full eval set; `int8` when measured already), sensitivity and greedy path (on
    a screening subset when `screening` says so), the frontier's screening points confirmed on
    the full set. Returns the points (all-int8, all-int16x8 first), the sensitivity and the
    runs beyond 3N+2 (besides the range settings')."""
    ev = study.evaluator
    if int8 is None:
        int8 = ev.run(set(), Precision.INT8, "all-int8", keep_model=True)
    else:
        bar.advance(int8.label)
    start = time.perf_counter()
    int16 = ev.run(study.allowed, Precision.INT16, "all-int16x8", keep_model=True)
    screen_ev = screening(ev, screen, time.perf_counter() - start)
    if screen_ev is not None:
        bar.grow(2)  # the endpoints again on the screening subset
    sens = measure_sensitivity(screen_ev or ev, study.candidates, study.allowed, False,
                               None if screen_ev else (int8, int16))
    greedy = greedy_points(screen_ev or ev, sens.candidates, sens.ranked(), show_progress=False)
    measured = [int8, int16, *sens.upgraded, *sens.downgraded, *greedy]
    points = confirm(ev, measured)
    if screen_ev is None:
        return points, sens, 0
    ev.runs += screen_ev.runs
    ev.run_seconds += screen_ev.run_seconds
    return points, sens, 2 + sum(a is not b for a, b in zip(measured, points))


def _choose(points: list[Point], constraint: Constraint, metric: Metric, fallback: Point) -> Choice:
    """`choose` against the best plan measured, never a worse reference (all-int16x8 can lose
    to a mixed plan: int16 everywhere also puts int16 where a rewrite made int8 better)."""
    best = max((p for p in points if not p.error), key=lambda p: p.score, default=fallback)
    return choose(points, constraint, best, metric)


RANGE_SETTINGS = ("minmax", "percentile:99.99", "mse")
FAST_LATENCY = 2.0  # x all-int8: beyond it the summary names the best plan that is not


def range_studies(study: Study) -> dict[str, Study]:
    """The study under each of RANGE_SETTINGS: one calibration each, the same float model, data
    and float reference (`study` itself for its own setting)."""
    studies = {}
    for method in RANGE_SETTINGS:
        if method == str(study.session.method):
            studies[method] = study
            continue
        session = QuantSession(study.session.model, study.session.calib,
                               CalibrationMethod.parse(method), show_progress=False,
                               kernels=study.session.kernels, quiet=True)
        ev = study.evaluator
        evaluator = Evaluator(session, ev.data, ev.metric, ev.latency_runs, ev.latency,
                              ev.reference)
        studies[method] = dataclasses.replace(study, session=session, evaluator=evaluator)
    return studies


def pick_range_setting(studies: dict[str, Study], show_progress: bool = False
                       ) -> tuple[Study, list[tuple[Study, Point]], Point]:
    """`--calibration auto`: all-int8 under every range setting; the search goes on with the
    best one (minmax on a tie). Returns that study, the other settings' points and its own
    all-int8."""
    bar = RunProgress(len(studies), "range settings", show_progress)
    try:
        tried = []
        for method, other in studies.items():
            other.evaluator.progress = bar
            tried.append((other, other.evaluator.run(set(), Precision.INT8, f"all-int8 [{method}]",
                                                     keep_model=True)))
            other.evaluator.progress = None
    finally:
        bar.close()
    best = max(tried, key=lambda t: (t[1].score, -RANGE_SETTINGS.index(str(t[0].session.method))))
    log.info("range setting: %s (all-int8 %s)", best[0].session.method,
             ", ".join(f"{p.label[10:-1]}: {p.value:.4g}" for _, p in tried))
    best[1].label = "all-int8"  # the search's own endpoint from here on
    return best[0], [t for t in tried if t is not best], best[1]


def calibration_moves(studies: dict[str, Study], own: Study, plans: list[Point],
                      show_progress: bool = False) -> list[tuple[Study, Point]]:
    """`plans` again under each other range setting: one run per plan, each point labelled
    `LABEL [SETTING]` and owned by its own study."""
    others = [(m, s) for m, s in studies.items() if s is not own]
    bar = RunProgress(len(others) * len(plans), "range settings", show_progress)
    moves = []
    try:
        for method, other in others:
            other.evaluator.progress = bar
            moves += [(other, other.evaluator.run(set(p.int16), Precision(p.default),
                                                  f"{p.label} [{method}]")) for p in plans]
            other.evaluator.progress = None
    finally:
        bar.close()
    return moves


def propose_preprocessing(study: Study, model_path: Path, calib_path: Path, eval_path: Path,
                          metric: str, calibration: str, latency: str,
                          allowed: bool) -> Proposal | None:
    """When the model normalises a raw input inside itself and `preprocessing` is not applied:
    the same model with that moved into a contract, its all-int8 and all-int16x8 measured (one
    more load and calibration, two runs)."""
    if not preprocessing_probe(study):
        return None
    with_contract = (*study.rewritten.names, "preprocessing")
    other = prepare(model_path, calib_path, eval_path, metric, calibration, False, False,
                    with_contract, latency=latency)
    ev = other.evaluator
    points = (ev.run(set(), Precision.INT8, "all-int8 [+preprocessing]"),
              ev.run(other.allowed, Precision.INT16, "all-int16x8 [+preprocessing]"))
    study.evaluator.runs += ev.runs
    return Proposal("preprocessing", other, points, allowed)


def refuse_impossible(study: Study, constraint: Constraint) -> None:
    """A cap below what the all-int8 model (the smallest and, beyond timing noise, fastest plan
    edgeq can make) measures can never be met: say so before spending any run on it."""
    if constraint.kind not in ("max_bytes", "max_latency_ms") or constraint.limit is None:
        return
    int8 = study.session.quantize(set())
    if constraint.kind == "max_bytes" and constraint.limit < len(int8.tflite):
        raise InputError(f"--max-bytes {constraint.limit:,.0f} is below the all-int8 model's "
                         f"{len(int8.tflite):,} bytes, the smallest plan edgeq can make; no plan "
                         "can meet it")
    if constraint.kind == "max_latency_ms":
        sample = raw_sample(int8.tflite, study.evaluator.data.sample(0))
        latency = measure_latency(int8.tflite, sample, study.evaluator.latency_runs,
                                  setting=study.evaluator.latency)
        if constraint.limit < latency.low_ms:
            raise InputError(f"--max-latency-ms {constraint.limit:g} is below the all-int8 model's "
                             f"{latency.median_ms:.4f} ms (fastest block {latency.low_ms:.4f} ms, "
                             f"{study.evaluator.latency.describe()}), the fastest plan edgeq can "
                             "make; no plan can meet it")


def _reuse(study: Study, old: Plan, show_progress: bool) -> tuple[list[Point], dict[str, Any]]:
    """Start from the old plan's int16 ops; re-examine only candidates touching changed ops.

    Returns the points (all-int8 and all-int16x8 first) and what was reused."""
    check = check_plan(old, study.session.ops)
    if old.graph and len(check.removed) + len(check.renamed) == len(old.graph):
        raise PlanError(f"the --reuse plan was made for another model: none of its {len(old.graph)} "
                        f"ops is in this one ({'; '.join(check.drift()[:4])}; ...)")
    base = set(check.matched.values()) & study.allowed
    known = {r.fingerprint for r in old.graph}
    changed = {op.index for op in study.session.ops if op.fingerprint not in known} & study.allowed
    touched = [c for c in study.candidates if c.ops & changed]
    ev = study.evaluator
    int8 = ev.run(set(), Precision.INT8, "all-int8")
    int16 = ev.run(study.allowed, Precision.INT16, "all-int16x8")
    start = ev.run(base, Precision.INT8, "old plan")
    upgraded = [ev.run(base | c.ops, Precision.INT8, f"old plan +{c.name}")
                for c in progress(touched, "re-examining", show_progress)]
    helpful = [k for k, p in enumerate(upgraded) if p.sqnr_db > start.sqnr_db]
    order = sorted(helpful, key=lambda k: -(upgraded[k].sqnr_db - start.sqnr_db)
                   / upgrade_cost(start, upgraded[k]))
    greedy = greedy_points(ev, touched, order, base, show_progress)
    info = {"plan_entries": len(old.int16), "still_matching": len(base),
            "changed_ops": len(changed), "re_examined_candidates": len(touched),
            "drift": check.drift()}
    return [int8, int16, start, *upgraded, *greedy], info


def _materialise(study: Study, point: Point) -> tuple[Plan, bytes]:
    """Quantise the chosen plan again (deterministic; not an evaluation run) and make its plan."""
    quantized = study.session.quantize(set(point.int16), Precision(point.default))
    int16_ops = [o.float_op for o in quantized.int16_ops()]
    metrics = {"sqnr_db": point.sqnr_db, study.evaluator.metric.kind.value: point.value}
    plan = Plan.for_ops(study.session.ops, int16_ops, metrics, point.default,
                        study.rewritten.names, str(study.session.method))
    return plan, quantized.tflite


@dataclass(frozen=True)
class Proposal:
    """A rewrite that changes what the model takes as input (`preprocessing`: a contract travels
    with the model), measured on its endpoints; its points are chosen only when allowed."""

    rewrite: str
    study: Study
    points: tuple[Point, ...]
    allowed: bool

    def text(self, int8: Point, metric: Metric) -> str:
        """One line: what the rewrite reaches, at what size, and how to take it."""
        best = max((p for p in self.points if not p.error), key=lambda p: p.score, default=None)
        if best is None:
            return f"--rewrite {self.rewrite}: its plans do not run ({self.points[0].error})"
        take = ("allowed (--allow-input-change): its points can be chosen" if self.allowed else
                "it changes the model's input (preprocessing.json travels with the model): rerun "
                f"with --rewrite {self.rewrite} or --allow-input-change to take it")
        return (f"--rewrite {self.rewrite}: {best.label} reaches {metric.format(best.value)} at "
                f"{best.size_bytes:,} bytes ({best.size_bytes / max(int8.size_bytes, 1):.2f}x "
                f"all-int8); {take}")

    def to_dict(self, int8: Point, metric: Metric) -> dict[str, Any]:
        return {"rewrite": self.rewrite, "allowed": self.allowed,
                "contracts": [c.to_dict() for c in self.study.rewritten.contracts],
                "points": [p.to_dict() for p in self.points], "text": self.text(int8, metric)}


@dataclass(frozen=True)
class SearchReport:
    """pareto.json: every point, the frontiers, the choice and the verdict."""

    model: str
    metric: Metric
    float_value: float | None
    data_source: str
    samples: int
    constraint: Constraint
    choice: Choice
    int8: Point
    int16: Point
    verdict: Verdict
    points: tuple[Point, ...]
    candidates: int
    runs: int
    run_budget: int
    reuse: dict[str, Any] | None
    timing_s: dict[str, float]
    warnings: tuple[str, ...]
    rewrites: Rewritten
    latency: LatencySetting = BUILTIN_LATENCY
    proposal: Proposal | None = None

    @property
    def faster(self) -> Point | None:
        """When the chosen plan is over FAST_LATENCY x all-int8's latency: the best plan that is
        not (what a latency-bound user would take instead), if it scores lower."""
        chosen = self.choice.chosen
        if chosen is None or self.int8.error or chosen.latency.ratio_to(self.int8.latency) <= FAST_LATENCY:
            return None
        fast = [p for p in self.full_points if not p.error
                and p.latency.ratio_to(self.int8.latency) <= FAST_LATENCY]
        best = max(fast, key=lambda p: (p.score, -p.latency_ms), default=None)
        return best if best is not None and best.score < chosen.score else None

    def faster_text(self) -> str:
        f, c = self.faster, self.choice.chosen
        if f is None or c is None:
            return ""
        ratio = c.latency.ratio_to(self.int8.latency)
        return (f"the chosen plan takes {ratio:.1f}x all-int8's latency; within "
                f"{FAST_LATENCY:g}x, {f.label} reaches {self.metric.format(f.value)} at "
                f"{f.latency.ratio_to(self.int8.latency):.2f}x (--max-latency-ms "
                f"{f.latency.high_ms * 1.05:.4g} chooses it)")

    @property
    def full_points(self) -> list[Point]:
        """The points measured on the whole eval set (not screening runs)."""
        return [p for p in self.points if not p.screened(self.samples)]

    def frontier_labels(self, axis: str) -> list[str]:
        return [p.label for p in frontier(self.full_points, axis)]

    def to_dict(self) -> dict[str, Any]:
        c = self.choice
        return {
            "model": self.model,
            "metric": self.metric.kind.value,
            "float_value": self.float_value,
            "data": {"source": self.data_source, "samples": self.samples},
            "constraint": {"kind": self.constraint.kind, "limit": self.constraint.limit,
                           "description": c.description, "met": c.met},
            "chosen": c.chosen.to_dict() if c.chosen else None,
            "best": c.best.to_dict(),
            "endpoints": {"all_int8": self.int8.to_dict(), "all_int16x8": self.int16.to_dict()},
            "verdict": self.verdict.to_dict(),
            "frontier": {axis: self.frontier_labels(axis) for axis in ("bytes", "latency_ms")},
            "points": point_rows(list(self.points), frontier_ids(self.full_points)),
            "candidates": self.candidates,
            "runs": self.runs,
            "run_budget": self.run_budget,
            "reuse": self.reuse,
            "timing_s": self.timing_s,
            "warnings": list(self.warnings),
            "rewrites": self.rewrites.to_dict(),
            "latency": {"setting": str(self.latency), "description": self.latency.describe()},
            "proposals": [self.proposal.to_dict(self.int8, self.metric)] if self.proposal else [],
            "faster": ({"point": self.faster.label, "text": self.faster_text()}
                       if self.faster else None),
            "legend": list(LABEL_LEGEND),
        }


def _report(study: Study, int8: Point, int16: Point, points: list[Point], choice: Choice,
            constraint: Constraint, n: int, reused: dict | None,
            proposal: Proposal | None = None, extra_runs: int = 0) -> SearchReport:
    """`extra_runs`: beyond the 3N+2 budget, the proposal's, the range-setting moves' and the
    screening's."""
    ev = study.evaluator
    timing = {"load": round(study.load_s, 3), "calibrate": round(study.session.calibration_s, 3),
              "per_run": round(ev.run_seconds / max(ev.runs, 1), 4),
              "runs": round(ev.run_seconds, 3),
              "total": round(time.perf_counter() - study.started, 3)}
    return SearchReport(study.session.model.source, ev.metric, ev.float_value(), ev.data.source,
                        len(ev.data), constraint, choice, int8, int16,
                        verdict([p for p in points if not p.screened(len(ev.data))], int8, int16,
                                ev.metric), tuple(points), n, ev.runs,
                        3 * n + 2 + (1 if reused else 0) + extra_runs,
                        reused, timing,
                        tuple(study.warnings), study.rewritten, ev.latency, proposal)


def write_search(out: Path, result: SearchResult) -> None:
    """OUT/pareto.json, pareto.csv, pareto.png, sensitivity.json, and when the constraint is
    met plan.json + model.tflite at the chosen point — all or nothing."""
    report = result.report
    with atomic_output_dir(out, "search") as tmp:
        (tmp / "pareto.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / "pareto.csv").write_text(points_csv(result.points, frontier_ids(result.points)))
        marks = {p.label: p for p in result.points if p.label in ("all-int8", "all-int16x8")}
        metric = report.metric
        plot(tmp / "pareto.png", result.points, marks, result.choice.chosen, metric.axis_label,
             None if report.float_value is None else metric.to_score(report.float_value),
             _title(report))
        if result.sensitivity is not None:
            (tmp / "sensitivity.json").write_text(json.dumps(result.sensitivity, indent=2) + "\n")
        if result.plan is not None:
            (tmp / "plan.json").write_text(json.dumps(result.plan.to_dict(), indent=2) + "\n")
            (tmp / "model.tflite").write_bytes(result.tflite)
            study = result.study
            write_contract(tmp, study.rewritten.contracts if study else report.rewrites.contracts)


def _title(report: SearchReport) -> str:
    rewrites = ", ".join(report.rewrites.names) or "none"
    return (f"edgeq search: {Path(report.model).name}, {report.metric.column} on "
            f"{report.samples} samples; rewrites: {rewrites}")


def search_summary(result: SearchResult) -> str:
    """The frontier as a table, the choice, the verdict and a legend for the labels."""
    r = result.report
    metric = r.metric
    lines = [f"edgeq search: {r.model} ({metric.column} on {r.samples} samples"
             + (f", float {metric.format(r.float_value)}" if r.float_value is not None else "")
             + ")",
             f"{r.runs} quantise+evaluate runs for {r.candidates} candidates "
             f"(budget {r.run_budget}), {r.timing_s.get('total', 0.0):.1f} s; latency: "
             f"{r.latency.describe()}, median of 5 blocks +- half their spread", "",
             f"{'point (frontier by size)':<48} {metric.column:>10} {'SQNR':>9} {'bytes':>8} "
             f"{'ms':>16} {'int16':>5}"]
    for p in sorted(frontier(r.full_points, "bytes"), key=lambda p: p.size_bytes):
        lo, hi = p.latency_spread_ms
        lines.append(f"{p.label[:48]:<48} {metric.format(p.value):>10} "
                     f"{p.sqnr_db:>6.2f} dB {p.size_bytes:>8,} "
                     f"{p.latency_ms:>8.4f}+-{(hi - lo) / 2:.4f} {p.int16_ops:>5}")
    lines.append("")
    c = r.choice
    if c.chosen is not None:
        lines.append(f"chosen: {c.chosen.label} ({c.description})")
    else:
        b = c.best
        lines.append(f"no point meets {c.description}; best found: {b.label} "
                     f"({metric.format(b.value)}, {b.size_bytes:,} bytes, {b.latency_ms:.4f} ms)")
    lines.append(f"verdict: {r.verdict.text}")
    if r.faster is not None:
        lines.append(f"faster: {r.faster_text()}")
    if r.proposal is not None:
        lines.append(f"proposal: {r.proposal.text(r.int8, metric)}")
    lines += [f"warning: {w}" for w in result.warnings]
    lines += ["", "labels:"] + [f"  {line}" for line in LABEL_LEGEND]
    return "\n".join(lines)
