"""Kernel truth: int16 support is learnt by invoking in LiteRT and TFLM, and cached."""

from __future__ import annotations

import json

from conftest import bundled

from edgeq.convert import ConvertConfig, convert
from edgeq.kernels import KernelCache, cache_path, invoke_check


def test_int16x8_records_proven_kernels_in_cache() -> None:
    model, calib, _ = bundled("digits_attention")
    convert(ConvertConfig(model, None, calib, mode="int16x8", show_progress=False))
    cache = KernelCache()
    assert cache.get("SOFTMAX") is True and cache.get("BATCH_MATMUL") is True
    on_disk = json.loads(cache_path().read_text())
    assert any("SOFTMAX" in ops for ops in on_disk.values())


def test_op_known_to_lack_int16_kernel_stays_int8_with_warning(tmp_path) -> None:
    cache = KernelCache()
    cache.record("SOFTMAX", False, "TFLM: test-recorded missing kernel")
    try:
        model, calib, _ = bundled("digits_attention")
        result = convert(ConvertConfig(model, None, calib, int16=("SOFTMAX", "BATCH_MATMUL"),
                                       show_progress=False))
    finally:
        KernelCache().record("SOFTMAX", True)
    by_type = result.report["summary"]["by_type"]
    assert by_type["SOFTMAX"] == {"int8": 1} and by_type["BATCH_MATMUL"] == {"int16": 2}
    warning = [w for w in result.report["warnings"] if "SOFTMAX" in w]
    assert warning and "no int16 kernel" in warning[0] and "node" in warning[0]


def test_invoke_check_reports_tflm_failure_by_op_name(multi_input_model) -> None:
    from edgeq.data import load_dataset
    from edgeq.load import load_model
    from edgeq.session import QuantSession

    model_path, calib_path = multi_input_model
    model = load_model(model_path)
    calib = load_dataset(calib_path, model.inputs)
    quantized = QuantSession(model, calib, show_progress=False).quantize(set())
    check = invoke_check(quantized.tflite, calib.sample(0))
    assert not check.litert_error
    assert "SELECT" in check.tflm_error
