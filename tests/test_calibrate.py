"""edgeq's calibration: absolute ranges of activations, never of weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import bundled

from edgeq.errors import InputError
from edgeq.model.data import load_dataset
from edgeq.model.graph import read_ops
from edgeq.model.load import load_model
from edgeq.quant.calibrate import CalibrationMethod, calibrate


@pytest.fixture(scope="module")
def cnn():
    model = load_model(bundled("digits_cnn")[0])
    return model, load_dataset(bundled("digits_cnn")[1], model.inputs)


def test_input_range_is_the_absolute_min_max(cnn) -> None:
    model, calib = cnn
    stats = calibrate(model.tflite, calib, show_progress=False)
    name = next(n for n in stats if "x" in n.split(":")[0].split("_")[-1])
    assert float(stats[name]["min"].ravel()[0]) == pytest.approx(float(calib.inputs[0].min()))
    assert float(stats[name]["max"].ravel()[0]) == pytest.approx(float(calib.inputs[0].max()))


def test_weights_are_not_calibrated(cnn) -> None:
    """A per-tensor weight range would override per-channel weight quantisation."""
    model, calib = cnn
    stats = calibrate(model.tflite, calib, show_progress=False)
    ops = read_ops(model.tflite)
    outputs = {name for op in ops for name in op.outputs}
    inputs = {model.inputs[0].name, f"serving_default_{model.inputs[0].name}:0"}
    assert outputs - {o for op in ops if op.activation_dtype == "int32" for o in op.outputs} \
        <= set(stats) <= outputs | inputs  # every float activation, and nothing else
    assert set(stats) & inputs


def test_percentile_narrows_ranges(cnn) -> None:
    model, calib = cnn
    full = calibrate(model.tflite, calib, show_progress=False)
    pct = calibrate(model.tflite, calib, CalibrationMethod.parse("percentile:99"), show_progress=False)
    widths = [(float(pct[k]["max"].max() - pct[k]["min"].min()),
               float(full[k]["max"].max() - full[k]["min"].min())) for k in full]
    assert all(p <= f + 1e-6 for p, f in widths) and any(p < f for p, f in widths)


@pytest.mark.parametrize("text", ["median", "percentile:", "percentile:40", "percentile:101"])
def test_bad_method_names_what_is_allowed(text: str) -> None:
    with pytest.raises(InputError, match="percentile:P"):
        CalibrationMethod.parse(text)


@pytest.fixture(scope="module")
def degenerate_model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Conv + fused ReLU6 whose activations are ~1e-10 (as in an untrained MobileNetV2)."""
    import keras

    keras.utils.set_random_seed(0)
    tiny = keras.initializers.RandomUniform(1e-11, 2e-11)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, kernel_initializer=tiny), keras.layers.ReLU(6.0),
        keras.layers.DepthwiseConv2D(3, depthwise_initializer=tiny), keras.layers.ReLU(6.0),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    root = tmp_path_factory.mktemp("degenerate")
    model.save(root / "m.keras")
    np.savez(root / "calib.npz", x=np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32))
    return root / "m.keras", root / "calib.npz"


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_degenerate_ranges_are_widened_and_named(degenerate_model: tuple, mode: str) -> None:
    from edgeq.convert import ConvertConfig, convert

    model, calib = degenerate_model
    result = convert(ConvertConfig(model, None, calib, mode=mode, show_progress=False))
    widened = [w for w in result.report.to_dict()["warnings"] if "widened" in w]
    assert widened and all("calibration: tensor" in w for w in widened)
    assert result.report.to_dict()["summary"]["integer_coverage_pct"] == 100.0


def test_notes_name_values_left_out_of_a_range() -> None:
    from edgeq.quant.calibrate import _RangeCollector

    collector = _RangeCollector(CalibrationMethod())
    collector.add("mask", np.array([0.0, -3.4e38, 1.0], np.float32))
    stats = collector.result()
    assert float(stats["mask"]["min"].ravel()[0]) == 0.0
    assert "mask" in collector.notes()[0] and "left out" in collector.notes()[0]


@pytest.mark.unit
def test_mse_clips_a_lone_tail_and_keeps_a_spread_range() -> None:
    from edgeq.quant.calibrate import least_error_range

    rng = np.random.default_rng(0)
    bulk = rng.normal(0.0, 1.0, 20_000)
    tailed = np.concatenate([bulk, [60.0]])  # one value 60 sigma out: not worth 255 coarse steps
    lo, hi = least_error_range(tailed, float(tailed.min()), float(tailed.max()))
    assert hi < 60.0 and lo == pytest.approx(tailed.min() * hi / 60.0)
    flat = rng.uniform(-1.0, 1.0, 20_000)  # every value matters as much: nothing to clip
    assert least_error_range(flat, -1.0, 1.0) == (-1.0, 1.0)


def test_mse_calibration_narrows_ranges_only_where_it_lowers_int8_error(cnn) -> None:
    model, calib = cnn
    minmax = calibrate(model.tflite, calib, show_progress=False)
    mse = calibrate(model.tflite, calib, CalibrationMethod.parse("mse"), show_progress=False)
    assert mse.keys() == minmax.keys()
    assert all(mse[k]["max"].max() <= minmax[k]["max"].max() + 1e-6 for k in mse)
    assert any(mse[k]["max"].max() < minmax[k]["max"].max() for k in mse)
