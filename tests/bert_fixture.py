"""A tiny BERT-shaped encoder as PyTorch -> ONNX -> onnx2tf delivers one (built in seconds):
int64 token ids and mask, token + position embeddings behind a negative-index LESS/ADD/SELECT,
the attention mask
as (1 - mask) * float32-min, LayerNorm decomposed into MEAN/SUB/MUL/SQRT/DIV, exact GELU, one
residual outlier channel (BERT's), masked mean pooling, and every linear layer a
BATCH_MATMUL with a constant weight followed by a bias ADD (how onnx2tf writes nn.Linear; the
TF converter would have made FULLY_CONNECTED, so the float model is edited back into that shape).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TOKENS, WIDTH, HEADS, VOCAB, FFN, LAYERS = 16, 64, 4, 200, 128, 2
OUTLIER_CHANNEL = 7
FLOAT32_MIN = -3.4028234663852886e38


def build_bert(root: Path, samples: int = 96) -> tuple[Path, Path, Path]:
    """bert.tflite (float, onnx2tf-shaped), calib.npz and eval.npz (token ids + masks) in root."""
    import tensorflow as tf

    model = _keras_encoder()
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    (root / "bert.tflite").write_bytes(_as_onnx2tf_writes_it(tflite))
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, TOKENS + 1, samples)
    mask = (np.arange(TOKENS)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(1, VOCAB, (samples, TOKENS)), 0).astype(np.int32)
    half = samples // 2
    np.savez(root / "calib.npz", input_ids=ids[:half], attention_mask=mask[:half])
    np.savez(root / "eval.npz", input_ids=ids[half:], attention_mask=mask[half:])
    return root / "bert.tflite", root / "calib.npz", root / "eval.npz"


def _keras_encoder() -> Any:
    import keras
    from keras import ops

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)

    class Constant(keras.layers.Layer):
        """A weight as a graph constant (what an exporter's initializers become)."""

        def __init__(self, value: np.ndarray, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.value = self.add_weight(shape=value.shape, initializer="zeros", trainable=False)
            self.value.assign(value.astype(np.float32))

        def call(self, x: Any) -> Any:
            return self.value

    def const(x: Any, shape: tuple[int, ...], scale: float) -> Any:
        return Constant(rng.normal(0.0, scale, shape))(x)

    def layer_norm(x: Any) -> Any:
        mean = ops.mean(x, axis=-1, keepdims=True)
        d = x - mean
        std = ops.sqrt(ops.mean(d * d, axis=-1, keepdims=True) + 1e-12)
        return d * (1.0 / std) * (const(x, (WIDTH,), 0.1) + 1.0) + const(x, (WIDTH,), 0.1)

    def linear(x: Any, n: int, outlier: bool = False) -> Any:
        w = rng.normal(0.0, 1.0 / np.sqrt(x.shape[-1]), (x.shape[-1], n))
        if outlier:
            w[:, OUTLIER_CHANNEL] *= 60.0
        return ops.matmul(x, Constant(w)(x)) + const(x, (n,), 0.02)

    def heads(x: Any) -> Any:
        return ops.transpose(ops.reshape(x, (1, TOKENS, HEADS, WIDTH // HEADS)), (0, 2, 1, 3))

    ids = keras.Input((TOKENS,), batch_size=1, dtype="int32", name="input_ids")
    mask = keras.Input((TOKENS,), batch_size=1, dtype="int32", name="attention_mask")
    x = keras.layers.Embedding(VOCAB, WIDTH)(ids) + const(ids, (TOKENS, WIDTH), 0.1)
    x = layer_norm(x)
    bias = ops.reshape((1.0 - ops.cast(mask, "float32")) * FLOAT32_MIN, (1, 1, 1, TOKENS))
    for layer in range(LAYERS):
        q, k, v = (heads(linear(x, WIDTH)) for _ in range(3))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * float(1 / np.sqrt(WIDTH // HEADS))
        context = ops.matmul(ops.softmax(scores + bias, axis=-1), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (1, TOKENS, WIDTH))
        x = layer_norm(x + linear(context, WIDTH))
        hidden = keras.activations.gelu(linear(x, FFN), approximate=False)
        x = layer_norm(x + linear(hidden, WIDTH, outlier=layer == 0))
    weights = ops.expand_dims(ops.cast(mask, "float32"), -1)
    pooled = ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1e-9)
    return keras.Model([ids, mask], pooled)


def _as_onnx2tf_writes_it(tflite: bytes) -> bytes:
    """FULLY_CONNECTED -> BATCH_MATMUL(x, W^T) + ADD(bias); RSQRT -> DIV(1, SQRT); int32
    inputs -> int64 (PyTorch's token ids) with a CAST to int32 behind them."""
    from ai_edge_litert import schema_py_generated as schema

    from edgeq.model.editor import GraphEditor
    from edgeq.model.flatbuffer import pack_tree, read_tree

    tree = read_tree(tflite)
    g = GraphEditor(tree, schema)
    ops = []
    for op in g.sg.operators:
        kind = g.op_type(op)
        out = int(op.outputs[0])
        name = g.tensor_name(out)
        if kind == "FULLY_CONNECTED":
            weights, bias = g.constant(int(op.inputs[1])), g.constant(int(op.inputs[2]))
            assert weights is not None and bias is not None
            product = g.add_tensor(out, f"{name}/MatMul_output_0")
            matmul = g.schema.OperatorT()
            matmul.opcodeIndex = g.opcode("BATCH_MATMUL")
            matmul.inputs = [int(op.inputs[0]), g.add_tensor(0, f"{name}/weight", weights.T.copy())]
            matmul.outputs = [product]
            matmul.builtinOptionsType = g.schema.BuiltinOptions.BatchMatMulOptions
            matmul.builtinOptions = g.schema.BatchMatMulOptionsT()
            ops += [matmul, g.binary_op("ADD", [g.add_tensor(0, f"{name}/bias", bias), product], out)]
        elif kind == "RSQRT":
            root = g.add_tensor(out, f"{name}/Sqrt_output_0")
            sqrt = g.schema.OperatorT()
            sqrt.opcodeIndex, sqrt.inputs, sqrt.outputs = g.opcode("SQRT"), [int(op.inputs[0])], [root]
            one = g.add_tensor(0, f"{name}/one", np.ones((1,), np.float32))
            ops += [sqrt, g.binary_op("DIV", [one, root], out)]
        else:
            ops.append(op)
    g.sg.operators = _int64_inputs(g) + ops
    g.prune()
    return pack_tree(tree)


def _int64_inputs(g: Any) -> list[Any]:
    """Make every int32 graph input int64 and give its readers a CAST of it to int32."""
    casts = []
    for index in (int(i) for i in g.sg.inputs):
        tensor = g.sg.tensors[index]
        if tensor.type != g.schema.TensorType.INT32:
            continue
        as_int32 = g.add_tensor(index, f"{g.tensor_name(index)}/Cast_output_0")
        g.sg.tensors[as_int32].type = g.schema.TensorType.INT32
        for op in g.sg.operators:
            op.inputs = [as_int32 if int(i) == index else int(i) for i in op.inputs]
        tensor.type = g.schema.TensorType.INT64
        cast = g.schema.OperatorT()
        cast.opcodeIndex, cast.inputs, cast.outputs = g.opcode("CAST"), [index], [as_int32]
        casts.append(cast)
    return casts
