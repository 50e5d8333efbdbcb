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


@pytest.mark.parametrize("setting", ["builtin", "xnnpack:2"])
def test_measured_latency_has_a_spread_around_its_median(setting: str) -> None:
    from edgeq.convert import ConvertConfig, convert
    from edgeq.study.measure import LatencySetting

    model, calib, _ = bundled("digits_cnn")
    result = convert(ConvertConfig(model, None, calib, show_progress=False))
    import numpy as np

    with np.load(calib) as d:
        sample = [d["x"][:1].astype(np.float32)]
    latency = measure_latency(result.tflite, raw_sample(result.tflite, sample), 50,
                              setting=LatencySetting.parse(setting))
    assert 0 < latency.low_ms <= latency.median_ms <= latency.high_ms


@pytest.mark.unit
def test_mean_sample_cosine_averages_per_sample() -> None:
    import numpy as np

    from edgeq.study.evaluate import mean_sample_cosine

    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    test = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # equal, orthogonal, both zero
    assert mean_sample_cosine(ref, test) == pytest.approx((1.0 + 0.0 + 1.0) / 3)


@pytest.mark.unit
def test_cosine_metric_scores_and_formats() -> None:
    from edgeq.study.measure import Metric, MetricKind

    metric = Metric("cosine")
    assert metric.kind is MetricKind.COSINE
    assert metric.value({"cosine": 0.99, "sqnr_db": 20.0}) == 0.99
    assert metric.from_score(metric.to_score(0.98)) == pytest.approx(0.98)
    assert metric.format(0.98765) == "cos 0.9877"
    assert metric.default_tolerance(0.99) == 0.01


@pytest.mark.unit
@pytest.mark.parametrize(("text", "xnnpack", "threads"), [("builtin", False, 1), ("xnnpack", True, 2),
                                                         ("xnnpack:4", True, 4)])
def test_latency_settings_parse(text: str, xnnpack: bool, threads: int) -> None:
    from edgeq.study.measure import LatencySetting

    setting = LatencySetting.parse(text)
    assert (setting.xnnpack, setting.threads) == (xnnpack, threads)
    assert str(LatencySetting.parse(str(setting))) == str(setting)


@pytest.mark.unit
@pytest.mark.parametrize("text", ["fast", "xnnpack:0", "xnnpack:x", "builtin:2", ""])
def test_bad_latency_setting_names_what_is_allowed(text: str) -> None:
    from edgeq.errors import InputError
    from edgeq.study.measure import LatencySetting

    with pytest.raises(InputError, match="expected builtin, xnnpack or xnnpack:THREADS"):
        LatencySetting.parse(text)

