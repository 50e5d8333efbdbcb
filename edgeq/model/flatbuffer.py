"""Read and write the TFLite flatbuffer as TFLite Micro can use it.

Two layout facts matter to microcontrollers and are not the quantizer's concern:

- litert-quantizer stores every constant buffer of 1 KiB or more *outside* the flatbuffer
  (`Buffer.offset`/`Buffer.size`, appended after it) once they add up to 256 KiB. LiteRT reads
  such buffers; TFLite Micro reads only `Buffer.data` (micro_allocator.cc
  `GetFlatbufferTensorBuffer`), so in TFLM those weights have no data and the model computes
  garbage without an error (measured on MobileNetV2 0.35/96: 147 LSB int8 and 30536 LSB
  int16x8 at the output; 0 and 1 LSB once inlined).
- TFLM kernels read weights and biases in place, so every buffer starts 16-byte aligned (the
  schema's `force_align: 16`, which the Python object API does not apply by itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TFLITE_MAGIC = b"TFL3"
BUFFER_ALIGN = 16


def read_tree(tflite: bytes) -> Any:
    """The model as a mutable object tree (ai_edge_litert.schema_py_generated.ModelT) with every
    external buffer read back into `Buffer.data`."""
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    for buffer in tree.buffers:
        if buffer.offset > 1:  # 0: none; 1: litert-quantizer's placeholder while packing
            buffer.data = np.frombuffer(tflite[buffer.offset: buffer.offset + buffer.size], np.uint8)
        buffer.offset, buffer.size = 0, 0
    return tree


def external_buffers(tflite: bytes) -> list[int]:
    """Indices of buffers stored outside the flatbuffer (which TFLite Micro cannot read)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite, 0)
    return [i for i in range(model.BuffersLength()) if (model.Buffers(i).Offset() or 0) > 1]


def pack_tree(tree: Any) -> bytes:
    """Serialise an object tree with every buffer inline and 16-byte aligned."""
    import flatbuffers

    saved = tree.buffers
    tree.buffers = [_AlignedBuffer(b.data) for b in saved]
    try:
        builder = flatbuffers.Builder(1024)
        builder.Finish(tree.Pack(builder), file_identifier=TFLITE_MAGIC)
    finally:
        tree.buffers = saved
    return bytes(builder.Output())


def inline_buffers(tflite: bytes) -> bytes:
    """The same model with external buffers moved inline (unchanged if it has none)."""
    return pack_tree(read_tree(tflite)) if external_buffers(tflite) else tflite


class _AlignedBuffer:
    """Stands in for a BufferT while packing: data inline, aligned to BUFFER_ALIGN."""

    def __init__(self, data: Any) -> None:
        self.data = b"" if data is None else np.asarray(data, np.uint8).tobytes()

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the flatbuffers object API's name
        from ai_edge_litert import schema_py_generated as schema

        vector = None
        if self.data:
            builder.StartVector(1, len(self.data), BUFFER_ALIGN)
            builder.head -= len(self.data)
            builder.Bytes[builder.head: builder.head + len(self.data)] = self.data
            vector = builder.EndVector(len(self.data))
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        return schema.BufferEnd(builder)


def op_type(tree: Any, op: Any) -> str:
    """The builtin name of an operator of `tree` ("CONV_2D"; "CUSTOM" for custom ops)."""
    code = tree.operatorCodes[op.opcodeIndex]
    return builtin_names().get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def builtin_names() -> dict[int, str]:
    """BuiltinOperator code -> name."""
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def tensor_type_name(code: int) -> str:
    """TensorType code -> numpy-style dtype name ("int8", "float32", ...)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return names.get(code, "other")


def text(value: Any) -> str:
    """A flatbuffer string field (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value or "")


def explain_node(tflite: bytes, message: str) -> str:
    """A LiteRT error ("... Node number 39 (CONV_2D) failed to prepare.") on one line, with the
    op's output tensor name so the user can find it in the model."""
    import re

    line = " ".join(message.split())
    match = re.search(r"Node number (\d+) \((\w+)\) failed to (\w+)", line)
    if not match:
        return line[:300]
    node = int(match.group(1))
    try:
        sg = read_tree(tflite).subgraphs[0]
        name = text(sg.tensors[sg.operators[node].outputs[0]].name).split(";")[0]
    except (IndexError, AttributeError, ValueError):
        name = "?"
    reason = line[: match.start()].strip().rstrip(".")
    return f"op {node} {match.group(2)} '{name}' failed to {match.group(3)}: {reason[-200:]}"
