"""The exact TFLite Micro op resolver for a model: one `Add...()` per op type, nothing else.

Kernel registrations: an op whose every occurrence has one activation dtype gets the
dtype-specialised registration where TFLM declares one (`Register_FULLY_CONNECTED_INT8()`, the
smaller CMSIS-NN / ESP-NN variant on those targets); an op that appears with int8 AND int16
(mixed plans) needs the generic registration, which handles both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeq.errors import ModelError
from edgeq.model.flatbuffer import op_type, read_tree, tensor_type_name

# MicroMutableOpResolver methods whose name is not the CamelCase of the builtin name.
_METHOD_EXCEPTIONS = {
    "CONV_2D": "Conv2D", "DEPTHWISE_CONV_2D": "DepthwiseConv2D", "MAX_POOL_2D": "MaxPool2D",
    "AVERAGE_POOL_2D": "AveragePool2D", "L2_POOL_2D": "L2Pool2D", "BATCH_MATMUL": "BatchMatMul",
    "PADV2": "PadV2", "RELU6": "Relu6", "RELU_N1_TO_1": "ReluN1To1", "ADD_N": "AddN",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM", "REVERSE_V2": "ReverseV2",
    "SELECT_V2": "SelectV2", "SPLIT_V": "SplitV", "L2_NORMALIZATION": "L2Normalization",
}
# Builtin ops TFLite Micro registers (MicroMutableOpResolver::Add... methods).
TFLM_OPS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE
DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV
FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION
L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX
MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT
SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE
TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())
# Ops with dtype-specialised registrations, and the kernel header declaring them.
_SPECIALISED = {"FULLY_CONNECTED": "fully_connected.h", "CONV_2D": "conv.h",
                "DEPTHWISE_CONV_2D": "depthwise_conv.h"}


@dataclass(frozen=True)
class OpUse:
    """One op type of the model and the activation dtypes it runs with."""

    op: str
    dtypes: tuple[str, ...]
    nodes: tuple[int, ...]

    @property
    def method(self) -> str:
        return "Add" + _METHOD_EXCEPTIONS.get(
            self.op, "".join(part.capitalize() for part in self.op.split("_")))

    @property
    def registration(self) -> str:
        """The argument of the Add call: '' (default generic) or a specialised registration."""
        if self.op in _SPECIALISED and len(self.dtypes) == 1 and self.dtypes[0] in ("int8", "int16"):
            return f"tflite::Register_{self.op}_{self.dtypes[0].upper()}()"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "dtypes": list(self.dtypes), "nodes": list(self.nodes),
                "call": f"{self.method}({self.registration})"}


def model_ops(tflite: bytes) -> list[OpUse]:
    """The op types of every subgraph, in first-use order, with their activation dtypes.

    Raises ModelError naming the op and node for a custom op or an op TFLM has no kernel for."""
    tree = read_tree(tflite)
    uses: dict[str, tuple[list[str], list[int]]] = {}
    for subgraph in tree.subgraphs:
        for node, op in enumerate(subgraph.operators):
            code = tree.operatorCodes[op.opcodeIndex]
            name = op_type(tree, op)
            if name == "CUSTOM":
                custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
                raise ModelError(f"custom op '{custom}' (node {node}) has no TFLite Micro kernel "
                                 "edgeq can register; replace it with builtin ops")
            if name not in TFLM_OPS:
                raise ModelError(f"TFLite Micro has no kernel for {name} (node {node})")
            outputs = [int(i) for i in op.outputs if i >= 0]
            dtype = tensor_type_name(subgraph.tensors[outputs[0]].type) if outputs else "none"
            dtypes, nodes = uses.setdefault(name, ([], []))
            if dtype not in dtypes:
                dtypes.append(dtype)
            nodes.append(node)
    return [OpUse(op, tuple(sorted(d)), tuple(n)) for op, (d, n) in uses.items()]


def resolver_header(cname: str, ops: list[OpUse], banner: str) -> str:
    """NAME_op_resolver.h: the resolver type with exactly these ops and a checked registration."""
    guard = f"EDGEQ_{cname.upper()}_OP_RESOLVER_H_"
    headers = sorted({_SPECIALISED[u.op] for u in ops if u.registration})
    includes = "\n".join(f'#include "tensorflow/lite/micro/kernels/{h}"' for h in headers)
    calls = "\n".join(
        f"  if (resolver.{u.method}({u.registration}) != kTfLiteOk) return kTfLiteError;"
        f"  // {'/'.join(u.dtypes)}, nodes {_nodes(u.nodes)}" for u in ops)
    return f"""{banner}
#ifndef {guard}
#define {guard}

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
{includes}

namespace {cname}_model {{

// Exactly the {len(ops)} op types of the model.
constexpr unsigned int kOpResolverSize = {len(ops)};
using OpResolver = tflite::MicroMutableOpResolver<kOpResolverSize>;

// Registers every op of the model; kTfLiteError if any registration fails.
inline TfLiteStatus RegisterOps(OpResolver& resolver) {{
{calls}
  return kTfLiteOk;
}}

// A resolver with the model's ops, built once (no heap); nullptr if a registration failed.
inline const OpResolver* GetOpResolver() {{
  static OpResolver resolver;
  static const bool ok = RegisterOps(resolver) == kTfLiteOk;
  return ok ? &resolver : nullptr;
}}

}}  // namespace {cname}_model

#endif  // {guard}
"""


def _nodes(nodes: tuple[int, ...]) -> str:
    shown = ", ".join(str(n) for n in nodes[:6])
    return shown + (f", ... ({len(nodes)})" if len(nodes) > 6 else "")
