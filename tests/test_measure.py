"""Latency measured in blocks: no verdict from differences inside timing noise."""

from __future__ import annotations

import pytest
from conftest import bundled

from edgeq.study.measure import Latency, measure_latency, raw_sample


# columns: a (median, low, high), b, expected a/b
@pytest.mark.parametrize("a,b,ratio", [
    ((3.5, 0.9, 35.0), (1.0, 0.95, 1.05), 1.0),  # one noisy block overlaps: no difference
    ((2.0, 1.9, 2.1), (1.0, 0.95, 1.05), 2.0),  # clearly apart
    ((1.02, 1.0, 1.04), (1.0, 0.98, 1.03), 1.0),
])
@pytest.mark.unit
def test_ratio_is_one_inside_noise(a: tuple, b: tuple, ratio: float) -> None:
    assert Latency(*a).ratio_to(Latency(*b)) == pytest.approx(ratio)


def test_measured_latency_has_a_spread_around_its_median() -> None:
    from edgeq.convert import ConvertConfig, convert

    model, calib, _ = bundled("digits_cnn")
    result = convert(ConvertConfig(model, None, calib, show_progress=False))
    import numpy as np

    with np.load(calib) as d:
        sample = [d["x"][:1].astype(np.float32)]
    latency = measure_latency(result.tflite, raw_sample(result.tflite, sample), 50)
    assert 0 < latency.low_ms <= latency.median_ms <= latency.high_ms
