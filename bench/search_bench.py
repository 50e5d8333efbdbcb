"""Benchmark `edgeq search` on the bundled models against the issue's targets; prints JSON.

Per model, in one process: the search (runs, candidates, calibration / one run / total time),
the frontier checked against all-int8, all-int16x8, "attention ops in int16", the plain
TFLiteConverter int8 and 16x8 and litert-quantizer's own a8w8 / a16w8, and 30 random plans
(how many the frontier dominates or contains). Then the targets: the concentrated example's
chosen plan (share of the gap, size and latency vs int8) and the collapse example with the
preprocessing rewrite (task metric vs float). `--scale` adds a 6-block transformer (trained
for a few seconds on digits) to time a search of several hundred ops.

    python bench/search_bench.py [--random 30] [--scale]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np

from edgeq.quant.quantize import Precision
from edgeq.study.baseline import plain_litert_quantizer, plain_tf_16x8, plain_tf_int8
from edgeq.study.evaluate import compare, run_model
from edgeq.study.measure import Point, latency_ms
from edgeq.study.pareto import dominates, frontier
from edgeq.study.search import SearchResult, search

# (example, metric, rewrites, role in the targets)
CASES = [
    ("digits_attention", "sqnr", (), "clear int8 -> int16x8 gap (transformer block)"),
    ("digits_attention", "sqnr", ("neg", "squared-difference"), "same, LayerNorm rewritten"),
    ("digits_outlier_mlp", "sqnr", (), "int8 error concentrated in few ops (outlier unit)"),
    ("digits_cnn", "auto", (), "int8 and int16x8 equal"),
    ("wine_collapse", "auto", (), "int8 collapses on raw inputs"),
    ("wine_collapse", "auto", ("preprocessing",), "collapse example with preprocessing moved out"),
]
ATTENTION_OPS = ("SOFTMAX", "BATCH_MATMUL")


def paths(name: str) -> tuple[Path, Path, Path]:
    ex = REPO / "examples"
    return ex / f"{name}.keras", ex / f"{name}_calib.npz", ex / f"{name}_eval.npz"


def covered(front: list[Point], p: Point) -> bool:
    """p is on the frontier or dominated by (or equal to) a frontier point."""
    return any(f.score >= p.score and f.size_bytes <= p.size_bytes for f in front)


def baseline_point(result: SearchResult, label: str, tflite: bytes) -> Point:
    """Measure a model made outside edgeq's session with the search's own metric."""
    ev = result.study.evaluator
    metrics = compare(ev.reference, run_model(tflite, ev.data), ev.names, ev.data.y)
    sample = run_model(tflite, ev.data.head(1)).raw_inputs[0]
    return Point(label, frozenset(), "-", ev.metric.score(metrics), ev.metric.value(metrics),
                 float(metrics["sqnr_db"]), len(tflite), latency_ms(tflite, sample, ev.latency_runs),
                 0, 0, 0)


def baselines(result: SearchResult, model_path: Path, rewrites: tuple) -> dict[str, Point | str]:
    study = result.study
    calib, float_tflite = study.session.calib, study.session.model.tflite
    makers = {"litert_quantizer_a8w8": lambda: plain_litert_quantizer(float_tflite, calib, 8),
              "litert_quantizer_a16w8": lambda: plain_litert_quantizer(float_tflite, calib, 16)}
    if not rewrites:  # the TF converter sees the Keras model itself (no rewrite possible)
        makers["tf_int8"] = lambda: plain_tf_int8(model_path, calib)
        makers["tf_16x8"] = lambda: plain_tf_16x8(model_path, calib)
    out: dict[str, Point | str] = {}
    for name, make in makers.items():
        try:
            out[name] = baseline_point(result, name, make())
        except Exception as e:
            out[name] = f"fails: {' '.join(str(e).split())[:160]}"
    attention = {op.index for op in study.session.ops if op.op in ATTENTION_OPS} & study.allowed
    if attention:
        out["attention_ops_int16"] = study.evaluator.run(attention, Precision.INT8, "attention ops")
    return out


def random_plans(result: SearchResult, n: int, seed: int = 0) -> list[Point]:
    rng = random.Random(seed)
    study = result.study
    cands = study.candidates
    plans = []
    for k in range(n):
        size = rng.randint(1, len(cands))
        chosen = set().union(*(c.ops for c in rng.sample(cands, size)))
        plans.append(study.evaluator.run(chosen, Precision.INT8, f"random {k}"))
    return plans


def one_run_s(result: SearchResult, repeat: int = 3) -> float:
    """Median time of one quantise+evaluate run (the all-int8 plan), measured standalone."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result.study.evaluator.run(set(), Precision.INT8, "timing")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_case(name: str, metric: str, rewrites: tuple, n_random: int) -> dict:
    model, calib, evald = paths(name)
    start = time.perf_counter()
    result = search(model, calib, evald, metric=metric, rewrites=rewrites, show_progress=False)
    search_s = time.perf_counter() - start
    r = result.report.to_dict()
    runs, n = r["runs"], r["candidates"]
    front = frontier(result.points, "bytes")
    int8, int16 = result.points[0], result.points[1]
    base = baselines(result, model, rewrites)
    dominated_by = {k: [f.label for f in front if dominates(p, f, "bytes")]
                    for k, p in base.items() if isinstance(p, Point)}
    plans = ("all-int8", "all-int16x8", "attention ops")
    plan_points = [p for p in [*result.points, *base.values()]
                   if isinstance(p, Point) and p.label in plans]
    randoms = random_plans(result, n_random)
    per_run = one_run_s(result)
    chosen = result.choice.chosen
    gap = int16.score - int8.score
    return {
        "model": name, "metric": r["metric"], "rewrites": list(rewrites),
        "ops": len(result.study.session.ops), "candidates": n, "runs": runs,
        "runs_within_3n_plus_2": runs <= 3 * n + 2,
        "time_s": {"load": r["timing_s"]["load"], "calibrate": r["timing_s"]["calibrate"],
                   "one_run_mean_in_search": r["timing_s"]["per_run"],
                   "one_run_int8_standalone": round(per_run, 4),
                   "search_total": round(search_s, 2),
                   "search_without_load": round(search_s - r["timing_s"]["load"], 2),
                   "target_calibrate_plus_1_2_runs": round(
                       r["timing_s"]["calibrate"] + 1.2 * runs * r["timing_s"]["per_run"], 2)},
        "float_value": r["float_value"],
        "all_int8": _brief(int8), "all_int16x8": _brief(int16),
        "chosen": _brief(chosen) if chosen else None,
        "chosen_recovers_share_of_gap": round((chosen.score - int8.score) / gap, 3)
        if chosen and gap > 0 else None,
        "chosen_vs_int8": {"size": round(chosen.size_bytes / int8.size_bytes, 3),
                           "latency": round(chosen.latency_ms / int8.latency_ms, 3)} if chosen else None,
        "best_value": max(result.points, key=lambda p: p.score).value,
        "verdict": r["verdict"]["text"],
        "frontier_bytes": [_brief(p) for p in front],
        "baselines": {k: (_brief(p) if isinstance(p, Point) else p) for k, p in base.items()},
        "frontier_points_dominated_by_a_baseline": dominated_by,
        "frontier_dominated_by_int8_int16x8_or_attention_plan": any(
            dominates(p, f, "bytes") for p in plan_points for f in front),
        "random_plans": {"n": len(randoms), "covered_by_frontier": sum(covered(front, p) for p in randoms),
                         "share": round(sum(covered(front, p) for p in randoms) / max(len(randoms), 1), 3)},
    }


def _brief(p: Point) -> dict:
    return {"label": p.label, "value": round(p.value, 4), "sqnr_db": round(p.sqnr_db, 2),
            "bytes": p.size_bytes, "latency_ms": round(p.latency_ms, 4), "int16_ops": p.int16_ops}


def scale_case() -> dict:
    """A 6-block transformer (several hundred ops), trained briefly on digits, searched whole."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    digits = load_digits()
    x, y = (digits.images / 16.0).astype(np.float32), digits.target
    inp = keras.Input((8, 8), name="x")
    h = keras.layers.Dense(32)(inp)
    for i in range(6):
        att = keras.layers.MultiHeadAttention(2, 16, name=f"block{i}_mha")(h, h)
        h = keras.layers.LayerNormalization(name=f"block{i}_ln1")(h + att)
        ffn = keras.layers.Dense(32, name=f"block{i}_ffn2")(
            keras.layers.Dense(64, activation="relu", name=f"block{i}_ffn1")(h))
        h = keras.layers.LayerNormalization(name=f"block{i}_ln2")(h + ffn)
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=32, verbose=0)
    root = Path(tempfile.mkdtemp(prefix="edgeq-scale-"))
    model.save(root / "t6.keras")
    np.savez(root / "calib.npz", x=x[:200])
    np.savez(root / "eval.npz", x=x[1400:], y=y[1400:])
    start = time.perf_counter()
    result = search(root / "t6.keras", root / "calib.npz", root / "eval.npz", metric="sqnr",
                    show_progress=False)
    minutes = (time.perf_counter() - start) / 60.0
    r = result.report
    return {"ops": len(result.study.session.ops), "candidates": r.candidates, "runs": r.runs,
            "minutes": round(minutes, 2), "target_minutes": 15, "verdict": r.verdict.text,
            "all_int8_sqnr": round(result.points[0].sqnr_db, 2),
            "all_int16x8_sqnr": round(result.points[1].sqnr_db, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=30, help="random plans per model")
    parser.add_argument("--scale", action="store_true", help="also time a 6-block transformer")
    args = parser.parse_args()
    cases = [dict(bench_case(n, m, rw, args.random), role=role) for n, m, rw, role in CASES]
    out = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "cases": cases}
    out["targets"] = targets(cases)
    if args.scale:
        out["scale"] = scale_case()
    print(json.dumps(out, indent=2))


def targets(cases: list[dict]) -> dict:
    by = {(c["model"], tuple(c["rewrites"])): c for c in cases}
    outlier = by[("digits_outlier_mlp", ())]
    collapse, plain = by[("wine_collapse", ("preprocessing",))], by[("wine_collapse", ())]
    return {
        "frontier_never_dominated_by_int8_int16x8_or_attention_plan": not any(
            c["frontier_dominated_by_int8_int16x8_or_attention_plan"] for c in cases),
        "other_quantizers_dominating_a_frontier_point": {
            f"{c['model']}{'+rw' if c['rewrites'] else ''}": {k: v for k, v in
                                                             c["frontier_points_dominated_by_a_baseline"].items()
                                                             if v}
            for c in cases if any(c["frontier_points_dominated_by_a_baseline"].values())},
        "random_plans_covered_share_min": min(c["random_plans"]["share"] for c in cases),
        "concentrated": {"recovered_share": outlier["chosen_recovers_share_of_gap"],
                         **outlier["chosen_vs_int8"],
                         "met": (outlier["chosen_recovers_share_of_gap"] or 0) >= 0.9
                         and outlier["chosen_vs_int8"]["size"] <= 1.10
                         and outlier["chosen_vs_int8"]["latency"] <= 1.25},
        "collapse": {"float": collapse["float_value"], "plain_int8": plain["all_int8"]["value"],
                     "best_with_rewrite": collapse["best_value"],
                     "met": collapse["best_value"] >= collapse["float_value"] - 0.01},
        "runs_within_3n_plus_2": all(c["runs_within_3n_plus_2"] for c in cases),
        "search_time_within_target": {c["model"] + ("+rw" if c["rewrites"] else ""):
                                      c["time_s"]["search_without_load"]
                                      <= c["time_s"]["target_calibrate_plus_1_2_runs"]
                                      for c in cases},
    }


if __name__ == "__main__":
    main()
