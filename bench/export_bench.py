"""Benchmark `edgeq export micro` on the bundled models (int8, int16x8, mixed); prints JSON.

Per model: export time (with and without the compile-and-rerun verification), model array
overhead in the compiled object beyond the .tflite bytes, and the measured arena against the
TFLM Python default (10x model size) and edgeq's own check default. With a prepared TFLM tree
(`.ci/tflm-env.sh`; EDGEQ_TFLM_DIR), also the exported firmware built and run on TFLM's C++:
host (reference kernels) and QEMU's Cortex-M4 with CMSIS-NN: flash/RAM, arena used,
instructions per inference, max LSB vs the golden (LiteRT reference kernels) outputs.

    python bench/export_bench.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeq.convert import ConvertConfig, convert
from edgeq.micro import MicroConfig, export_micro

CASES = [  # (example, convert options)
    ("digits_cnn", {"mode": "int8"}),
    ("digits_attention", {"mode": "int8"}),
    ("digits_attention", {"mode": "int16x8", "rewrites": ("all",)}),
    ("digits_attention", {"int16": ("SOFTMAX", "BATCH_MATMUL")}),
    ("digits_outlier_mlp", {"int16": (".*hidden.*",)}),
    ("wine_collapse", {"rewrites": ("preprocessing",)}),
    ("digits_attention", {"mode": "int16x8", "rewrites": ("all",), "cmsis_nn": True}),
]
TFLM = Path(os.environ.get("EDGEQ_TFLM_DIR", Path.home() / ".cache/edgeq/tflm")) / "tflite-micro"


def firmware(out: Path) -> dict:
    """The exported project on TFLM C++ (host, cortex-m4) when a built TFLM tree is there."""
    from edgeq.errors import EdgeqError
    from edgeq.micro.firmware import FirmwareConfig, firmware_run

    if not (TFLM / "gen").is_dir():
        return {"skipped": f"no built TFLM tree at {TFLM} (.ci/tflm-env.sh)"}
    runs = {}
    for target in ("host", "cortex-m4"):
        try:
            r = firmware_run(FirmwareConfig(out, TFLM, target)).to_dict()
            runs[target] = {k: r[k] for k in ("passed", "max_diff_lsb", "flash_bytes",
                                              "ram_bytes", "arena_used_bytes")}
            if r["instructions_per_inference"]:
                runs[target]["instructions_per_inference"] = max(r["instructions_per_inference"])
        except EdgeqError as e:
            runs[target] = {"error": str(e)[:240]}
    return runs


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="edgeq-export-bench-"))
    rows = []
    for k, (name, options) in enumerate(CASES):
        ex = REPO / "examples"
        conv = root / f"conv{k}"
        report = convert(ConvertConfig(ex / f"{name}.keras", conv, ex / f"{name}_calib.npz", ex /
                                       f"{name}_eval.npz", show_progress=False, **options)).report.to_dict()
        model = conv / "model.tflite"
        start = time.perf_counter()
        fast = export_micro(MicroConfig(model, root / f"fast{k}", name, verify=False))
        fast_s = time.perf_counter() - start
        start = time.perf_counter()
        full = export_micro(MicroConfig(model, root / f"full{k}", name, golden=ex / f"{name}_eval.npz"))
        full_s = time.perf_counter() - start
        a, v = full["arena"], full["verified"]
        rows.append({
            "model": name, "mode": report["mode"], "int16_ops": report["summary"]["int16_ops"],
            "bytes": full["model"]["bytes"], "ops": full["op_resolver_size"],
            "export_s": round(fast_s, 2), "export_with_verification_s": round(full_s, 2),
            "array_overhead_bytes": {t: o["symbol_bytes"] - full["model"]["bytes"]
                                     for t, o in v["objects"].items() if o["checked"]},
            "arena_measured_bytes": a["measured_bytes"], "arena_exported_bytes": a["exported_bytes"],
            "tflm_python_default_bytes": a["tflm_python_default_bytes"],
            "arena_vs_default": round(a["exported_bytes"] / a["tflm_python_default_bytes"], 3),
            "tflm_vs_litert_lsb": v["tflm_from_object"]["max_abs_diff_lsb_vs_litert"],
            "same_arena_both_runs": fast["arena"]["measured_bytes"] == a["measured_bytes"],
            "cmsis_nn_weights": bool(options.get("cmsis_nn")),
            "firmware": firmware(root / f"full{k}"),
        })
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                      "exports": rows}, indent=2))


if __name__ == "__main__":
    main()
