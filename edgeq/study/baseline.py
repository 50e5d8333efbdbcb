"""The plain TFLiteConverter full-integer conversion: the yardstick edgeq is measured against."""

from __future__ import annotations

from pathlib import Path

from edgeq.capture import captured_output
from edgeq.model.data import Dataset
from edgeq.model.load import tf_converter


def plain_tf_int8(model_path: Path, calib: Dataset) -> bytes:
    """TFLiteConverter int8 (int8 I/O, representative dataset = calib) of a Keras/SavedModel."""
    import tensorflow as tf

    converter = tf_converter(Path(model_path))

    def representative():
        for k in range(len(calib)):
            yield calib.sample(k)

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with captured_output("TFLiteConverter int8"):
        return bytes(converter.convert())


def plain_tf_16x8(model_path: Path, calib: Dataset) -> bytes:
    """TFLiteConverter's experimental 16x8 mode (int16 activations, int8 weights, int16 I/O)."""
    import tensorflow as tf

    converter = tf_converter(Path(model_path))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (calib.sample(k) for k in range(len(calib)))
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = tf.int16
    converter.inference_output_type = tf.int16
    with captured_output("TFLiteConverter 16x8"):
        return bytes(converter.convert())


def plain_litert_quantizer(float_tflite: bytes, calib: Dataset, activations: int = 8) -> bytes:
    """litert-quantizer on its own: its calibrate() and its static a8w8 / a16w8 recipe."""
    from litert_quantizer import quantizer, recipe

    from device_agent.runtimes import LiteRTRuntime

    with LiteRTRuntime(float_tflite) as rt:
        key = next(iter(rt.interpreter.get_signature_list()))
        names = [s.name for s in rt.inputs()]
    chosen = recipe.static_wi8_ai8() if activations == 8 else recipe.static_wi8_ai16()
    with captured_output("litert-quantizer"):
        q = quantizer.Quantizer(bytearray(float_tflite), chosen)
        samples = [dict(zip(names, calib.sample(k))) for k in range(len(calib))]
        stats = q.calibrate({key: samples})
        return bytes(q.quantize(stats).quantized_model)
