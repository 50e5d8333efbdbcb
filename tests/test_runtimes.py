"""The Runtime protocol over real LiteRT and TFLM interpreters; TFLM crashes stay in a child."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import bundled

from device_agent.runtimes import (
    LiteRTRuntime,
    Runtime,
    TensorSpec,
    TFLMRuntime,
    dequantize,
    open_runtime,
    quantize,
)
from device_agent.tflm_child import run_tflm
from edgeq.convert import ConvertConfig, convert


@pytest.fixture(scope="module")
def int8_cnn() -> bytes:
    model, calib, _ = bundled("digits_cnn")
    return convert(ConvertConfig(model, None, calib, show_progress=False)).tflite


def test_litert_and_tflm_share_the_protocol_and_agree(int8_cnn: bytes) -> None:
    x = np.random.default_rng(0).random((1, 8, 8, 1))
    with LiteRTRuntime(int8_cnn) as litert, TFLMRuntime(int8_cnn) as tflm:
        assert isinstance(litert, Runtime) and isinstance(tflm, Runtime)
        assert [s.dtype for s in litert.inputs()] == [s.dtype for s in tflm.inputs()] == ["int8"]
        raw = [quantize(x, litert.inputs()[0])]
        a, b = litert.infer(raw)[0], tflm.infer(raw)[0]
    assert np.max(np.abs(a.astype(int) - b.astype(int))) <= 1


def test_infer_rejects_wrong_input(int8_cnn: bytes) -> None:
    with LiteRTRuntime(int8_cnn) as rt, pytest.raises(ValueError, match="needs int8"):
        rt.infer([np.zeros((1, 8, 8, 1), np.float32)])


def test_open_runtime_lists_known_names(int8_cnn: bytes) -> None:
    with pytest.raises(ValueError, match="litert, tflite-runtime, tflm"):
        open_runtime("nope", int8_cnn)
    assert open_runtime("auto", int8_cnn).name == "litert"


@pytest.mark.parametrize("scale,zero_point,dtype", [(0.5, -3, "int8"), (0.01, 0, "int16")])
def test_quantize_dequantize_round_trip(scale: float, zero_point: int, dtype: str) -> None:
    spec = TensorSpec("t", (5,), dtype, scale, zero_point)
    x = np.linspace(-1, 1, 5)
    assert np.allclose(dequantize(quantize(x, spec), spec), x, atol=scale / 2 + 1e-9)


def test_tflm_child_survives_a_tiny_arena(int8_cnn: bytes) -> None:
    x = [np.zeros((1, 8, 8, 1), np.int8)]
    run = run_tflm(int8_cnn, [x], arena_size=64)
    assert not run.ok and run.error
    assert run_tflm(int8_cnn, [x], arena_size=256 * 1024).ok
