"""The plain TFLiteConverter full-integer conversion: the yardstick edgeq is measured against."""

from __future__ import annotations

from pathlib import Path

from .capture import captured_output
from .data import Dataset
from .load import tf_converter


def plain_tf_int8(model_path: Path, calib: Dataset) -> bytes:
    """TFLiteConverter int8 (int8 I/O, representative dataset = calib) of a Keras/SavedModel."""
    import tensorflow as tf

    converter = tf_converter(Path(model_path))

    def representative():  # noqa: ANN202
        for k in range(len(calib)):
            yield calib.sample(k)

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with captured_output("TFLiteConverter int8"):
        return bytes(converter.convert())
