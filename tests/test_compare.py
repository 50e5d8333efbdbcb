"""edgeq compare and the root cause it found: litert-quantizer stores big weight buffers outside
the flatbuffer, TFLite Micro reads only inline buffers, so it computed with missing weights.

The minimal reproduction is one FULLY_CONNECTED op whose weights (512 x 600 int8 = 300 KiB) push
the model past litert-quantizer's 256 KiB threshold for external buffers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import edgeq.quant.quantize
from edgeq.errors import InputError
from edgeq.model.flatbuffer import BUFFER_ALIGN, external_buffers, read_tree
from edgeq.model.load import from_tflite_bytes
from edgeq.study.compare import compare_runtimes, parse_runtimes


@pytest.fixture(scope="module")
def one_op(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A float one-FC model, its eval data, and its int8 models with and without edgeq's fix."""
    import keras
    import tensorflow as tf

    from edgeq.model.data import Dataset
    from edgeq.quant.session import QuantSession

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((512,), batch_size=1), keras.layers.Dense(600)])
    float_tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    root = tmp_path_factory.mktemp("one_op")
    x = np.random.default_rng(0).normal(size=(8, 512)).astype(np.float32)
    np.savez(root / "eval.npz", x=x)
    (root / "float.tflite").write_bytes(float_tflite)
    session = QuantSession(from_tflite_bytes(float_tflite), Dataset((x,), None, "x"),
                           show_progress=False)
    fixed = session.quantize(set()).tflite
    original = edgeq.quant.quantize.inline_buffers
    edgeq.quant.quantize.inline_buffers = lambda b: b  # what litert-quantizer alone writes
    try:
        raw = session.quantize(set()).tflite
    finally:
        edgeq.quant.quantize.inline_buffers = original
    for name, data in (("raw", raw), ("fixed", fixed)):
        (root / name).mkdir()
        (root / name / "model.tflite").write_bytes(data)
    return {"root": root, "raw": raw, "fixed": fixed, "x": x}


def _raw_inputs(tflite: bytes, x: np.ndarray) -> list[np.ndarray]:
    from device_agent.runtimes import LiteRTRuntime, quantize

    with LiteRTRuntime(tflite) as rt:
        spec = rt.inputs()[0]
    return [np.stack([quantize(x[k: k + 1], spec) for k in range(len(x))])]


def test_litert_quantizer_alone_writes_external_buffers_tflm_cannot_read(one_op: dict) -> None:
    raw = one_op["raw"]
    assert external_buffers(raw), "the minimal model no longer triggers external buffers"
    found = compare_runtimes(raw, _raw_inputs(raw, one_op["x"]), ("litert-builtin", "tflm"))
    tflm = found.result("tflm")
    assert not tflm.ok and max(tflm.max_diff_lsb) > 10
    d = tflm.divergence
    assert d is not None and d.op_index == 0 and d.op == "FULLY_CONNECTED"
    assert any(t.external_buffer for t in d.inputs) and "external buffer" in d.hints[0]
    assert "outside the flatbuffer" in found.diagnostics[0]


def test_edgeq_writes_every_buffer_inline_and_aligned_and_tflm_agrees(one_op: dict) -> None:
    fixed = one_op["fixed"]
    assert external_buffers(fixed) == []
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(fixed, 0)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            assert buffer._tab.Vector(buffer._tab.Offset(4)) % BUFFER_ALIGN == 0
    found = compare_runtimes(fixed, _raw_inputs(fixed, one_op["x"]), ("litert-builtin", "tflm"))
    assert found.ok and max(found.result("tflm").max_diff_lsb) <= 1
    # same weights as the raw model: only the layout changed
    raw_tree, fixed_tree = read_tree(one_op["raw"]), read_tree(fixed)
    assert [bytes(np.asarray(b.data if b.data is not None else [], np.uint8)) for b in raw_tree.buffers] == \
        [bytes(np.asarray(b.data if b.data is not None else [], np.uint8)) for b in fixed_tree.buffers]


def test_cli_names_the_op_and_exits_1_then_0_after_the_fix(one_op: dict, capsys) -> None:
    root = one_op["root"]
    code, out, _ = run_cli(["compare", str(root / "raw" / "model.tflite"), "--eval",
                            str(root / "eval.npz"), "--float", str(root / "float.tflite"), "--json"],
                           capsys)
    report = json.loads(out)
    assert code == 1 and report["reference"] == "litert-builtin"
    by_name = {r["runtime"]: r for r in report["runtimes"]}
    assert set(by_name) == {"litert-builtin", "litert", "litert-ref", "tflm"}
    assert by_name["litert"]["within_tolerance"] and by_name["litert-ref"]["within_tolerance"]
    assert by_name["tflm"]["first_divergence"]["op"] == "FULLY_CONNECTED"
    assert by_name["tflm"]["sqnr_db_vs_float"][0] < by_name["litert"]["sqnr_db_vs_float"][0] - 10
    code, out, _ = run_cli(["compare", str(root / "fixed" / "model.tflite"), "--eval",
                            str(root / "eval.npz")], capsys)
    assert code == 0 and "tflm" in out and "beyond" not in out


def test_text_output_explains_the_divergence(one_op: dict, capsys) -> None:
    root = one_op["root"]
    code, out, _ = run_cli(["compare", str(root / "raw" / "model.tflite"), "--eval",
                            str(root / "eval.npz"), "--runtimes", "litert-builtin,tflm"], capsys)
    assert code == 1
    for words in ("first divergence tflm vs litert-builtin: op 0 FULLY_CONNECTED", "EXTERNAL",
                  "share of elements by |diff| LSB", "why"):
        assert words in out


def test_export_micro_of_a_raw_model_inlines_its_buffers(one_op: dict, tmp_path: Path, capsys) -> None:
    root = one_op["root"]
    code, out, _err = run_cli(["export", "micro", str(root / "raw" / "model.tflite"), "-o",
                              str(tmp_path / "fw"), "--name", "one", "--golden",
                              str(root / "eval.npz"), "--json"], capsys)
    manifest = json.loads(out)
    assert code == 0 and "outside the flatbuffer" in manifest["warnings"][0]
    assert manifest["verified"]["tflm_from_object"]["max_abs_diff_lsb_vs_litert"] <= 1


# columns: --runtimes value, what the error names
@pytest.mark.parametrize("value,words", [("tflm", "at least two"), ("litert,gpu", "'gpu'"),
                                         ("", "at least two")])
@pytest.mark.unit
def test_runtime_list_is_checked(value: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        parse_runtimes(value)


def test_convert_report_carries_the_tflm_comparison(tmp_path: Path, capsys) -> None:
    from conftest import bundled

    model, calib, evalf = bundled("digits_cnn")
    code, out, _ = run_cli(["convert", str(model), "--calib", str(calib), "--eval", str(evalf),
                            "-o", str(tmp_path / "o"), "--json"], capsys)
    tflm = json.loads(out)["tflm"]
    assert code == 0 and tflm["runs"] and tflm["within_tolerance"] and not tflm["rounding_drift"]
    assert tflm["first_divergence"] is None and tflm["tolerance_lsb"] == 2
    assert tflm["reference"] == "LiteRT reference kernels"
    sqnr = tflm["sqnr_db_vs_float"]
    assert abs(sqnr["tflm"] - sqnr["litert_reference"]) < 0.5 and sqnr["litert_builtin"] > 20


def test_rounding_drift_is_told_apart_from_a_divergence(one_op: dict) -> None:
    """Reference kernels vs builtin on a model without missing weights: at most rounding."""
    fixed = one_op["fixed"]
    found = compare_runtimes(fixed, _raw_inputs(fixed, one_op["x"]), ("litert-ref", "tflm"),
                             tolerance=0)
    tflm = found.result("tflm")
    assert tflm.within or tflm.divergence is not None  # tolerance 0: any difference parts
    raw = one_op["raw"]
    broken = compare_runtimes(raw, _raw_inputs(raw, one_op["x"]), ("litert-ref", "tflm")).result("tflm")
    assert not broken.drift and broken.divergence is not None
