"""Benchmark edgeq convert against the plain TFLiteConverter int8 path, in the same process.

Prints JSON: conversion time (edgeq int8 vs plain converter, median of --repeat runs, TF
already imported for both), and for plain-int8 / edgeq int8 / int16x8 / mixed: size, SQNR vs
float, task metric and LiteRT latency per inference (median of --runs invokes, 1 thread,
builtin kernels without XNNPACK).

    python bench/convert_bench.py [--model digits_attention] [--runs 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np

from device_agent.runtimes import LiteRTRuntime, quantize
from edgeq.capture import captured_output
from edgeq.model.data import load_dataset
from edgeq.model.load import load_model
from edgeq.quant.calibrate import calibrate
from edgeq.quant.opspec import select_ops
from edgeq.quant.quantize import Precision
from edgeq.quant.session import QuantSession
from edgeq.study.baseline import plain_tf_int8
from edgeq.study.evaluate import compare, run_model
from edgeq.study.measure import latency_ms

MIXED_OPS = ("SOFTMAX", "BATCH_MATMUL")


def edgeq_int8(model_path: Path, calib_path: Path) -> bytes:
    """What `edgeq convert --mode int8` does before evaluation: load, calibrate, quantise."""
    model = load_model(model_path)
    calib = load_dataset(calib_path, model.inputs)
    return QuantSession(model, calib, show_progress=False).quantize(set()).tflite


def median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def float_latency_ms(tflite: bytes, sample: list[np.ndarray], runs: int) -> float:
    """edgeq.study.measure.latency_ms on a float sample quantised for this model's inputs."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        raw = [quantize(x, s) for x, s in zip(sample, rt.inputs())]
    return latency_ms(tflite, raw, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_attention")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model_path = REPO / "examples" / f"{args.model}.keras"
    calib_path = REPO / "examples" / f"{args.model}_calib.npz"
    eval_path = REPO / "examples" / f"{args.model}_eval.npz"

    model = load_model(model_path)  # imports TF for both sides before timing
    calib = load_dataset(calib_path, model.inputs)
    evald = load_dataset(eval_path, model.inputs, labels=True)
    plain_s, plain = median_time(lambda: plain_tf_int8(model_path, calib), args.repeat)
    edgeq_s, _ = median_time(lambda: edgeq_int8(model_path, calib_path), args.repeat)
    calib_s, _ = median_time(lambda: calibrate(model.tflite, calib, show_progress=False), args.repeat)

    session = QuantSession(model, calib, show_progress=False)
    mixed_ops = select_ops([t for t in MIXED_OPS if any(o.op == t for o in session.ops)]
                           or [session.ops[-1].op], session.ops)
    variants = {
        "plain_tf_int8": plain,
        "edgeq_int8": session.quantize(set()).tflite,
        "edgeq_int16x8": session.quantize({o.index for o in session.float_ops}, Precision.INT16).tflite,
        "edgeq_mixed": session.quantize(mixed_ops).tflite,
    }
    reference = run_model(model.tflite, evald)
    sample = evald.sample(0)
    results = {}
    for name, tflite in variants.items():
        metrics = compare(reference, run_model(tflite, evald), ["out"], evald.y)
        results[name] = {"bytes": len(tflite), "sqnr_db": round(metrics["sqnr_db"], 2),
                         "task": metrics["task"], "latency_ms_p50": round(
                             float_latency_ms(tflite, sample, args.runs), 4)}
    print(json.dumps({
        "model": args.model,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "convert_s": {"plain_tf_int8": round(plain_s, 3), "edgeq_int8": round(edgeq_s, 3),
                      "edgeq_calibration_only": round(calib_s, 3),
                      "ratio_edgeq_vs_plain": round(edgeq_s / plain_s, 3)},
        "mixed_int16_ops": sorted({session.ops[i].op for i in mixed_ops}),
        "float_sqnr_reference_samples": len(evald),
        "variants": results,
        "latency_runs": args.runs,
    }, indent=2))


if __name__ == "__main__":
    main()
