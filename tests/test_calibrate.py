"""edgeq's calibration: absolute ranges of activations, never of weights."""

from __future__ import annotations

import pytest
from conftest import bundled

from edgeq.calibrate import CalibrationMethod, calibrate
from edgeq.data import load_dataset
from edgeq.errors import InputError
from edgeq.graph import read_ops
from edgeq.load import load_model


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
    outputs = {name for op in read_ops(model.tflite) for name in op.outputs}
    assert set(stats) <= outputs | {model.inputs[0].name} | {f"serving_default_{model.inputs[0].name}:0"}


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
