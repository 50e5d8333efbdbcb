"""A user's MobileNetV2 (alpha 0.35, 96x96, 4 classes) in int8 and int16x8: LiteRT vs TFLite Micro,
before and after edgeq writes every weight buffer inline; prints JSON.

The model is Keras' MobileNetV2 (no downloaded weights; BatchNorm momentum 0.9 so 5 epochs
settle its statistics), trained for 5 epochs on scikit-learn's digits 0-3 upscaled to 96x96x3
(seeded, no download; cached in ~/.cache/edgeq/bench). Per row: size, SQNR vs float in LiteRT
(builtin and reference kernels) and in TFLM on the same samples, max LSB TFLM vs each, the first
diverging op (`edgeq compare`), and whether `export micro` verifies.

    python bench/mobilenet_bench.py [--samples 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edgeq.quant.quantize
from edgeq.convert import ConvertConfig, convert
from edgeq.errors import EdgeqError
from edgeq.micro import MicroConfig, export_micro
from edgeq.model.flatbuffer import external_buffers
from edgeq.model.load import from_tflite_bytes as load_model_bytes
from edgeq.model.load import load_model
from edgeq.study.compare import compare_runtimes
from edgeq.study.evaluate import quantized_reference, run_model

CACHE = Path(os.environ.get("EDGEQ_CACHE_DIR", Path.home() / ".cache" / "edgeq")) / "bench"


def trained_mobilenet() -> tuple[Path, Path, Path]:
    """(model.keras, calib.npz, eval.npz), trained once and cached."""
    root = CACHE / "mobilenetv2_035_96"
    model = root / "model.keras"
    if model.exists():
        return model, root / "calib.npz", root / "eval.npz"
    import keras
    from sklearn.datasets import load_digits

    root.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    digits = load_digits()
    keep = digits.target < 4
    x = np.repeat(np.repeat(digits.images[keep] / 16.0, 12, axis=1), 12, axis=2)
    x = (x[..., None].repeat(3, axis=-1) * 2 - 1).astype(np.float32)
    y = digits.target[keep].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    net = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                         classes=4, classifier_activation=None)
    for layer in net.layers:  # 0.999 needs ~1000 steps to settle; 5 epochs are 95
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(x[:600], y[:600], epochs=5, batch_size=32, verbose=0)
    np.savez(root / "calib.npz", x=x[:64])
    np.savez(root / "eval.npz", x=x[600:700], y=y[600:700])
    net.save(model)
    return model, root / "calib.npz", root / "eval.npz"


def row(label: str, tflite: bytes, data: Path, float_tflite: bytes, samples: int,
        work: Path) -> dict:
    """Compare LiteRT and TFLM on `samples` eval samples, then try export micro."""
    (work / f"{label}.tflite").write_bytes(tflite)
    ref = quantized_reference(tflite, data, {}, samples)
    floats = run_model(float_tflite, ref.data).values
    vs_builtin = compare_runtimes(tflite, ref.raw_inputs, ("litert-builtin", "tflm"), True, None,
                                  floats, ref.data.y)
    vs_reference = compare_runtimes(tflite, ref.raw_inputs, ("litert-ref", "tflm"), True, None,
                                    floats, ref.data.y)
    litert, tflm = vs_builtin.reference, vs_builtin.result("tflm")
    start = time.perf_counter()
    try:
        manifest = export_micro(MicroConfig(work / f"{label}.tflite", work / f"fw-{label}", "m",
                                            golden=data, golden_samples=2))
        export = {"ok": True, "s": round(time.perf_counter() - start, 1),
                  "arena_bytes": manifest["arena"]["exported_bytes"],
                  "warnings": manifest["warnings"]}
    except EdgeqError as e:
        export = {"ok": False, "error": str(e)[:200]}
    d = tflm.divergence
    return {"model": label, "bytes": len(tflite), "external_buffers": len(external_buffers(tflite)),
            "sqnr_db_litert_builtin": round(min(litert.sqnr_db), 2),
            "sqnr_db_litert_reference": round(min(vs_reference.reference.sqnr_db), 2),
            "sqnr_db_tflm": round(min(tflm.sqnr_db), 2),
            "accuracy_litert": litert.task["value"], "accuracy_tflm": tflm.task["value"],
            "max_lsb_tflm_vs_litert_builtin": max(tflm.max_diff_lsb),
            "max_lsb_tflm_vs_litert_reference": max(vs_reference.result("tflm").max_diff_lsb),
            "first_diverging_op_vs_builtin": None if d is None else
            f"op {d.op_index} {d.op} '{d.short_name}'",
            "why": None if d is None else list(d.hints), "export_micro": export}


def _float_accuracy(float_tflite: bytes, data: Path, samples: int) -> float:
    from device_agent.metrics import task_metric
    from edgeq.model.data import load_dataset

    model = load_model_bytes(float_tflite)
    evald = load_dataset(data, model.inputs, labels=True).head(samples)
    return task_metric(run_model(float_tflite, evald).values[0], evald.y)["value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    model, calib, evalf = trained_mobilenet()
    float_tflite = load_model(model).tflite
    work = Path(tempfile.mkdtemp(prefix="edgeq-mnv2-bench-"))
    from edgeq.model.data import load_dataset
    from edgeq.study.baseline import plain_tf_int8

    calib_data = load_dataset(calib, load_model_bytes(float_tflite).inputs)
    rows = [row("int8 plain TFLiteConverter (baseline)", plain_tf_int8(model, calib_data), evalf,
                float_tflite, args.samples, work)]
    for mode in ("int8", "int16x8"):
        cfg = ConvertConfig(model, None, calib, evalf, mode=mode, show_progress=False)
        after = convert(cfg).tflite
        original = edgeq.quant.quantize.inline_buffers
        edgeq.quant.quantize.inline_buffers = lambda b: b  # what litert-quantizer alone writes
        try:
            before = convert(cfg).tflite
        finally:
            edgeq.quant.quantize.inline_buffers = original
        rows.append(row(f"{mode} as litert-quantizer writes it", before, evalf, float_tflite,
                        args.samples, work))
        rows.append(row(f"{mode} edgeq", after, evalf, float_tflite, args.samples, work))
    print(json.dumps({"model": "MobileNetV2 alpha 0.35, 96x96x3, 4 classes, trained 5 epochs",
                      "float_bytes": len(float_tflite), "eval_samples": args.samples,
                      "float_accuracy": _float_accuracy(float_tflite, evalf, args.samples),
                      "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
