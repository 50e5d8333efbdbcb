"""Model files as users have them: float16 .tflite, and files that are not what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bundled, run_cli

from edgeq.model.graph import read_ops
from edgeq.model.load import load_model


@pytest.fixture(scope="module")
def float16_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CNN as a float16 .tflite (weights float16, DEQUANTIZE ops to float32)."""
    import keras
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(
        keras.models.load_model(bundled("digits_cnn")[0], compile=False))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    path = tmp_path_factory.mktemp("fp16") / "cnn_fp16.tflite"
    path.write_bytes(converter.convert())
    return path


def test_float16_weights_are_read_as_float32(float16_tflite: Path) -> None:
    assert any(op.op == "DEQUANTIZE" for op in read_ops(float16_tflite.read_bytes()))
    model = load_model(float16_tflite)
    ops = read_ops(model.tflite)
    assert not any(op.op == "DEQUANTIZE" for op in ops)
    assert all("float16" not in op.input_dtypes for op in ops)


def test_float16_model_converts_like_the_float32_one(float16_tflite: Path, tmp_path: Path,
                                                    capsys) -> None:
    import json

    model, calib, evalf = bundled("digits_cnn")
    results = {}
    for name, path in (("fp16", float16_tflite), ("fp32", model)):
        code, out, _ = run_cli(["convert", str(path), "--calib", str(calib), "--eval", str(evalf),
                                "-o", str(tmp_path / name), "--json"], capsys)
        assert code == 0
        results[name] = json.loads(out)
    assert results["fp16"]["summary"]["integer_coverage_pct"] == 100.0
    assert results["fp16"]["metrics"]["sqnr_db"] > results["fp32"]["metrics"]["sqnr_db"] - 3.0


# columns: file name, content, words of the one-line error
@pytest.mark.parametrize("name,content,words", [
    ("model.keras", b"hello, not a model\n", "expected a zip archive"),
    ("model.h5", b"PK\x03\x04 zip, not hdf5", "expected an HDF5 file"),
    ("model.tflite", b"\x00" * 64, "not a TFLite flatbuffer"),
    ("model.onnx", b"x", "unknown model type"),
])
def test_wrong_files_get_one_line_errors(tmp_path: Path, capsys, name: str, content: bytes,
                                         words: str) -> None:
    (tmp_path / name).write_bytes(content)
    code, out, err = run_cli(["convert", str(tmp_path / name), "--calib",
                              str(bundled("digits_cnn")[1]), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""
