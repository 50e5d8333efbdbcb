"""Kernel truth: int16 support is learnt by invoking in LiteRT and TFLM, and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bundled

from edgeq.convert import ConvertConfig, convert
from edgeq.quant.kernels import KernelCache, cache_path, invoke_check


@pytest.fixture()
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernel cache of this test's own: what it asserts was learnt in this test."""
    monkeypatch.setenv("EDGEQ_CACHE_DIR", str(tmp_path / "cache"))
    assert not cache_path().exists()
    return cache_path()


def test_int16x8_records_proven_kernels_in_cache(empty_cache: Path) -> None:
    assert KernelCache().get("SOFTMAX") is None  # nothing known yet: the check must invoke
    model, calib, _ = bundled("digits_attention")
    convert(ConvertConfig(model, None, calib, mode="int16x8", show_progress=False))
    cache = KernelCache()
    assert cache.get("SOFTMAX") is True and cache.get("BATCH_MATMUL") is True
    on_disk = json.loads(empty_cache.read_text())
    assert any("SOFTMAX" in ops for ops in on_disk.values())


def test_op_known_to_lack_int16_kernel_stays_int8_with_warning(empty_cache: Path) -> None:
    KernelCache().record("SOFTMAX", False, "TFLM: test-recorded missing kernel")
    model, calib, _ = bundled("digits_attention")
    result = convert(ConvertConfig(model, None, calib, int16=("SOFTMAX", "BATCH_MATMUL"),
                                   show_progress=False))
    by_type = result.report.to_dict()["summary"]["by_type"]
    assert by_type["SOFTMAX"] == {"int8": 1} and by_type["BATCH_MATMUL"] == {"int16": 2}
    warning = [w for w in result.report.to_dict()["warnings"] if "SOFTMAX" in w]
    assert warning and "no int16 kernel" in warning[0] and "node" in warning[0]


def test_invoke_check_reports_tflm_failure_by_op_name(multi_input_model) -> None:
    from edgeq.model.data import load_dataset
    from edgeq.model.load import load_model
    from edgeq.quant.session import QuantSession

    model_path, calib_path = multi_input_model
    model = load_model(model_path)
    calib = load_dataset(calib_path, model.inputs)
    quantized = QuantSession(model, calib, show_progress=False).quantize(set())
    check = invoke_check(quantized.tflite, calib.sample(0))
    assert not check.litert_error
    assert "SELECT" in check.tflm_error
