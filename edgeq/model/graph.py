"""The op table of a .tflite model: what each op is, what it produces, and in which dtype."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from device_agent.runtimes import LiteRTRuntime
from edgeq.capture import captured_output

# Keras numbers its auto-named models per process ("functional_6/..."): the same model saved
# from another session gets other numbers, so fingerprints drop them.
_KERAS_MODEL_SCOPE = re.compile(r"(?<![^/;])(functional|sequential)(?:_\d+)*(?=/)")

# Ops the quantizer inserts at precision boundaries; they are not part of the user's graph.
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OpInfo:
    """One op of subgraph 0."""

    index: int
    op: str
    outputs: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    activation_dtype: str  # dtype of its first output
    weight_dtype: str | None  # dtype of its constant inputs, if any
    input_dtypes: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # input tensor names (graph structure: who feeds whom)
    constant_inputs: tuple[bool, ...] = ()  # per input: a constant (weights, bias, scalar)

    @property
    def name(self) -> str:
        """The op's name: its first output tensor (what Keras layer names end up as)."""
        return self.outputs[0] if self.outputs else f"op_{self.index}"

    @property
    def scope(self) -> str:
        """litert-quantizer's key for recipe regexes: output names joined by ';' plus ';'."""
        return "".join(f"{name};" for name in self.outputs)

    @property
    def stable_name(self) -> str:
        """The name without Keras' per-process model counters."""
        return _KERAS_MODEL_SCOPE.sub(r"\1", self.name)

    @property
    def shape_key(self) -> str:
        """Op type + shapes, without the name: how a renamed op is recognised."""
        return _digest(f"{self.op}|{self.input_shapes}|{self.output_shapes}")

    @property
    def fingerprint(self) -> str:
        """Op type + output name + shapes: changes when the op is renamed, reshaped or removed."""
        return _digest(f"{self.op}|{self.stable_name}|{self.input_shapes}|{self.output_shapes}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "name": self.name,
                "activation_dtype": self.activation_dtype, "weight_dtype": self.weight_dtype,
                "output_shapes": [list(s) for s in self.output_shapes],
                "fingerprint": self.fingerprint}


def read_ops(tflite: bytes) -> list[OpInfo]:
    """Every op of the main subgraph, in execution order."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        interp = rt.interpreter
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        ops = interp._get_ops_details()
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    table = []
    for op in ops:
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        outs = [int(i) for i in op["outputs"] if int(i) >= 0]
        constants = [i for i in ins if i not in produced and i not in graph_inputs]
        weight_dtypes = {np.dtype(tensors[i]["dtype"]).name for i in constants
                         if np.dtype(tensors[i]["dtype"]).name not in ("int32", "int64")}
        table.append(OpInfo(
            index=int(op["index"]),
            op=op["op_name"],
            outputs=tuple(tensors[i]["name"] for i in outs),
            input_shapes=tuple(tuple(int(d) for d in tensors[i]["shape"]) for i in ins),
            output_shapes=tuple(tuple(int(d) for d in tensors[i]["shape"]) for i in outs),
            activation_dtype=np.dtype(tensors[outs[0]]["dtype"]).name if outs else "none",
            weight_dtype=",".join(sorted(weight_dtypes)) or None,
            input_dtypes=tuple(np.dtype(tensors[i]["dtype"]).name for i in ins),
            inputs=tuple(tensors[i]["name"] for i in ins),
            constant_inputs=tuple(i in constants for i in ins),
        ))
    return table


def requantize_ops(ops: list[OpInfo]) -> int:
    """QUANTIZE ops between two integer types: the int8 <-> int16 boundaries a mixed plan pays
    for (not the float -> int8 QUANTIZE after a CAST of an integer input, say)."""
    return sum(1 for op in ops if op.op == "QUANTIZE" and op.input_dtypes
               and {op.input_dtypes[0], op.activation_dtype} == {"int8", "int16"})


def produced_tensor_indices(interpreter: Any) -> set[int]:
    """Indices of every op output of a LiteRT interpreter (its op table is private API: this
    module is the only one that reads it)."""
    return {int(i) for op in interpreter._get_ops_details() for i in op["outputs"]}


def graph_ops(tflite: bytes) -> list[OpInfo]:
    """The user's ops only (without inserted QUANTIZE/DEQUANTIZE boundary ops)."""
    return [op for op in read_ops(tflite) if op.op not in BOUNDARY_OPS]


def input_tensor_names(tflite: bytes) -> list[str]:
    """Tensor names of the graph inputs (calibration statistics are keyed by these)."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        return [d["name"] for d in rt.interpreter.get_input_details()]


def not_integer_note(tflite: bytes) -> str:
    """'' for a full-integer model; else a warning naming its float ops and float I/O (a float
    model on a device is legal, but rarely what the user meant to ship)."""
    float_ops = sorted({op.op for op in read_ops(tflite) if op.activation_dtype == "float32"})
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        float_io = [s.name for s in rt.inputs() + rt.outputs() if s.dtype == "float32"]
    if not float_ops and not float_io:
        return ""
    return (f"the model is not full-integer (float32 ops: {', '.join(float_ops) or 'none'}; float "
            f"I/O: {', '.join(float_io) or 'none'}); did you mean the model.tflite of `edgeq convert`?")
