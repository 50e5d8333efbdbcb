"""Real conversions of real models: dtypes per mode, quality vs the plain converter, TFLM."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import BUNDLED, bundled

from device_agent.runtimes import LiteRTRuntime
from edgeq.convert import ConvertConfig, ConvertResult, convert
from edgeq.model.data import load_dataset
from edgeq.model.graph import read_ops
from edgeq.model.load import load_model
from edgeq.study.baseline import plain_tf_int8
from edgeq.study.evaluate import compare, run_model


def _convert(name: str, out: Path | None = None, **kwargs) -> ConvertResult:
    model, calib, evalf = bundled(name)
    cfg = ConvertConfig(model, out, calib, evalf, show_progress=False, **kwargs)
    return convert(cfg)


@pytest.fixture(scope="module")
def attention_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The attention block converted as the user gets it (exact rewrites on) and without them."""
    root = tmp_path_factory.mktemp("att")
    results = {mode: _convert("digits_attention", root / mode, mode=mode)
               for mode in ("int8", "int16x8")}
    results.update({f"{mode}-no-rewrite": _convert("digits_attention", None, mode=mode, rewrites=())
                    for mode in ("int8", "int16x8")})
    return results


def _activation_dtypes(tflite: bytes) -> set[str]:
    return {op.activation_dtype for op in read_ops(tflite) if op.op not in ("QUANTIZE", "DEQUANTIZE")}


def test_int8_mode_is_integer_only_by_default(attention_results: dict) -> None:
    result = attention_results["int8"]
    with LiteRTRuntime(result.tflite) as rt:
        assert [s.dtype for s in rt.inputs() + rt.outputs()] == ["int8", "int8"]
    assert result.report.to_dict()["float_ops"] == []
    assert _activation_dtypes(result.tflite) == {"int8"}
    assert set(result.report.rewrites.names) == {"neg", "squared-difference"}


def test_without_rewrites_neg_stays_float_and_the_report_says_why(attention_results: dict) -> None:
    # NEG has no int8 rule in litert-quantizer: the only float ops, and the report says why.
    result = attention_results["int8-no-rewrite"]
    float_ops = result.report.to_dict()["float_ops"]
    assert {o["op"] for o in float_ops} == {"NEG"}
    assert all("NEG" in o["reason"] for o in float_ops)
    assert _activation_dtypes(result.tflite) == {"int8", "float32"}
    assert result.report.to_dict()["rewrites"]["applied"] == []


def test_int16x8_mode_has_int16_io_and_keeps_unsupported_ops_int8(attention_results: dict) -> None:
    result = attention_results["int16x8-no-rewrite"]
    with LiteRTRuntime(result.tflite) as rt:
        assert [s.dtype for s in rt.inputs() + rt.outputs()] == ["int16", "int16"]
    by_type = result.report.to_dict()["summary"]["by_type"]
    assert by_type["SOFTMAX"] == {"int16": 1} and by_type["BATCH_MATMUL"] == {"int16": 2}
    # SQUARED_DIFFERENCE has no a16w8 rule: int8, with a warning naming it.
    assert by_type["SQUARED_DIFFERENCE"] == {"int8": 2}
    assert any("SQUARED_DIFFERENCE" in w and "int8" in w for w in result.report.to_dict()["warnings"])


def test_int16x8_beats_int8_where_int8_is_weak(tmp_path: Path) -> None:
    """Raw wide-range regression inputs: int8 loses precision that int16 keeps."""
    int8 = _convert("diabetes_regression", mode="int8").report.to_dict()["metrics"]["sqnr_db"]
    int16 = _convert("diabetes_regression", mode="int16x8").report.to_dict()["metrics"]["sqnr_db"]
    assert int16 > int8 + 3.0


def test_mixed_mode_puts_only_named_ops_in_int16(tmp_path: Path) -> None:
    result = _convert("digits_attention", tmp_path / "out", int16=("SOFTMAX",))
    int16 = [o for o in result.report.to_dict()["ops"] if o["activation_dtype"] == "int16"]
    assert [o["op"] for o in int16] == ["SOFTMAX"]
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert [e["op"] for e in plan["int16"]] == ["SOFTMAX"]
    # the plan written by convert reproduces the same model
    again = _convert("digits_attention", plan=tmp_path / "out" / "plan.json")
    assert again.tflite == result.tflite


@pytest.mark.parametrize("name", BUNDLED)
def test_int8_quality_at_least_plain_converter(name: str) -> None:
    """Quality bar: edgeq int8 SQNR >= plain TFLiteConverter int8 SQNR - 0.5 dB."""
    model_path, calib_path, eval_path = bundled(name)
    model = load_model(model_path)
    calib = load_dataset(calib_path, model.inputs)
    evald = load_dataset(eval_path, model.inputs, labels=True)
    reference = run_model(model.tflite, evald)
    plain = compare(reference, run_model(plain_tf_int8(model_path, calib), evald), ["y"], evald.y)
    ours = _convert(name, mode="int8").report.to_dict()["metrics"]
    assert ours["sqnr_db"] >= plain["sqnr_db"] - 0.5, (ours["sqnr_db"], plain["sqnr_db"])


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_tflm_runs_and_agrees_with_litert(mode: str) -> None:
    tflm = _convert("digits_cnn", mode=mode).report.to_dict()["tflm"]
    assert tflm["runs"], tflm
    assert tflm["samples"] == 16
    assert 0 <= tflm["max_abs_diff_lsb"] <= 2


def test_report_fields_are_consistent(attention_results: dict, tmp_path_factory) -> None:
    result = attention_results["int8"]
    report = result.report.to_dict()
    summary = report["summary"]
    assert summary["ops"] == len(report["ops"])
    integer = sum(1 for o in report["ops"] if o["activation_dtype"] != "float32")
    assert summary["integer_ops"] == integer
    assert summary["integer_coverage_pct"] == pytest.approx(100 * integer / summary["ops"], abs=0.01)
    assert report["model"]["bytes"] == len(result.tflite)
    assert report["model"]["sha256"] == hashlib.sha256(result.tflite).hexdigest()
    metrics = report["metrics"]
    assert metrics["data"] == "eval" and metrics["samples"] == 360
    assert metrics["task"]["metric"] == "accuracy" and 0.0 <= metrics["task"]["value"] <= 1.0
    assert 0.9 < metrics["outputs"][0]["cosine"] <= 1.0
    for spec in report["io"]["inputs"] + report["io"]["outputs"]:
        assert spec["scale"] > 0 and spec["dtype"] == "int8"


def test_written_files_match_the_result(tmp_path: Path) -> None:
    result = _convert("digits_cnn", tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [".edgeq-output.json", "model.tflite",
                                                     "plan.json", "report.json"]
    assert (out / "model.tflite").read_bytes() == result.tflite
    assert json.loads((out / "report.json").read_text())["model"]["sha256"] == \
        hashlib.sha256(result.tflite).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_multi_input_keeps_int_ids_int32(multi_input_model) -> None:
    model, calib = multi_input_model
    result = convert(ConvertConfig(model, None, calib, show_progress=False))
    dtypes = {s["name"]: s["dtype"] for s in result.report.to_dict()["io"]["inputs"]}
    assert dtypes == {"ids": "int32", "feats": "int8"}
    # Keras' Embedding lowers to LESS/ADD/SELECT (negative-index wrap); TFLM has no SELECT. The
    # index-fixup rewrite removes it (ids are non-negative, proved on the data): TFLM runs it.
    assert "index-fixup" in result.report.rewrites.names
    assert result.report.tflm.runs, result.report.tflm.error
    plain = convert(ConvertConfig(model, None, calib, rewrites=(), show_progress=False))
    assert not plain.report.tflm.runs and "SELECT" in (plain.report.tflm.error or "")


@pytest.mark.parametrize("fixture", ["saved_model_dir", "float_tflite_dynamic_batch"])
def test_savedmodel_and_float_tflite_inputs(fixture: str, request) -> None:
    model = request.getfixturevalue(fixture)
    _, calib, evalf = bundled("digits_cnn")
    result = convert(ConvertConfig(model, None, calib, evalf, show_progress=False))
    assert result.report.to_dict()["io"]["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert result.report.to_dict()["metrics"]["task"]["value"] > 0.9


def test_percentile_calibration_changes_ranges() -> None:
    minmax = _convert("digits_cnn").report.to_dict()["io"]["outputs"][0]["scale"]
    pct = _convert("digits_cnn", calibration="percentile:99").report.to_dict()["io"]["outputs"][0]["scale"]
    assert pct < minmax


def test_dynamic_non_batch_dimension_is_a_clear_error(tmp_path: Path) -> None:
    import keras

    from edgeq.errors import ModelError

    inp = keras.Input((None, 8), name="x")
    path = tmp_path / "dyn.keras"
    keras.Model(inp, keras.layers.Dense(2)(inp)).save(path)
    with pytest.raises(ModelError, match=r"input 'x' has dynamic shape \[None, None, 8\]"):
        load_model(path)


def test_a_plan_carries_its_range_setting(tmp_path: Path) -> None:
    first = _convert("digits_cnn", tmp_path / "a", calibration="percentile:99")
    plan = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert plan["calibration"] == "percentile:99"
    again = _convert("digits_cnn", plan=tmp_path / "a" / "plan.json")  # no --calibration given
    assert again.tflite == first.tflite and again.report.calibration == "percentile:99"
    assert _convert("digits_cnn").report.calibration == "minmax"
