"""Edits of a TFLite model's object tree (ai_edge_litert.schema_py_generated), subgraph 0:
the primitives every graph rewrite is made of."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.model.flatbuffer import op_type


class GraphEditor:
    """Edits subgraph 0 of a TFLite object tree (ai_edge_litert.schema_py_generated)."""

    def __init__(self, tree: Any, schema: Any) -> None:
        self.tree, self.schema = tree, schema
        self.sg = tree.subgraphs[0]

    def op_type(self, op: Any) -> str:
        return op_type(self.tree, op)

    def tensor_name(self, index: int) -> str:
        name = self.sg.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def constant(self, index: int) -> np.ndarray | None:
        """The float32 value of a constant tensor, or None if it is not a float constant."""
        t = self.sg.tensors[index]
        buf = self.tree.buffers[t.buffer] if t.buffer < len(self.tree.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0 or t.type != self.schema.TensorType.FLOAT32:
            return None
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        return np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.float32).reshape(shape)

    def readers(self, tensor: int) -> list[Any]:
        """Ops that read `tensor`."""
        return [op for op in self.sg.operators if tensor in [int(i) for i in op.inputs]]

    def is_output(self, tensor: int) -> bool:
        """`tensor` is one of the graph's outputs."""
        return tensor in [int(i) for i in self.sg.outputs]

    def int_constant(self, index: int) -> np.ndarray | None:
        """The value of an integer constant tensor (int32/int64), or None."""
        t = self.sg.tensors[index]
        buf = self.tree.buffers[t.buffer] if t.buffer < len(self.tree.buffers) else None
        dtypes = {self.schema.TensorType.INT32: np.int32, self.schema.TensorType.INT64: np.int64}
        if buf is None or buf.data is None or len(buf.data) == 0 or t.type not in dtypes:
            return None
        return np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), dtypes[t.type])

    def opcode(self, name: str) -> int:
        code = getattr(self.schema.BuiltinOperator, name)
        for k, oc in enumerate(self.tree.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
                return k
        oc = self.schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        self.tree.operatorCodes.append(oc)
        return len(self.tree.operatorCodes) - 1

    def add_tensor(self, like: int, name: str, value: np.ndarray | None = None) -> int:
        """A new float32 tensor shaped like tensor `like` (or a constant holding `value`)."""
        t = self.schema.TensorT()
        t.name, t.type = name, self.schema.TensorType.FLOAT32
        if value is None:
            src = self.sg.tensors[like]
            t.shape = None if src.shape is None else list(src.shape)
            t.shapeSignature = None if src.shapeSignature is None else list(src.shapeSignature)
            t.buffer = 0
        else:
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(value.astype(np.float32).tobytes(), np.uint8)
            self.tree.buffers.append(buf)
            t.shape, t.buffer = list(value.shape), len(self.tree.buffers) - 1
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def binary_op(self, name: str, inputs: list[int], output: int) -> Any:
        op = self.schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(name), inputs, [output]
        options = {"MUL": ("MulOptions", "MulOptionsT"), "SUB": ("SubOptions", "SubOptionsT"),
                   "ADD": ("AddOptions", "AddOptionsT"), "DIV": ("DivOptions", "DivOptionsT")}[name]
        op.builtinOptionsType = getattr(self.schema.BuiltinOptions, options[0])
        op.builtinOptions = getattr(self.schema, options[1])()
        return op

    def prune(self) -> None:
        """Drop tensors no op, input or output uses any more (the raw input after a
        preprocessing move, its constants) and buffers no tensor or metadata uses."""
        sg, tree = self.sg, self.tree
        used = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for op in sg.operators:
            used |= {int(i) for i in op.inputs if i >= 0} | {int(i) for i in op.outputs}
            used |= {int(i) for i in (op.intermediates if op.intermediates is not None else ())}
        remap = {old: new for new, old in enumerate(sorted(used))}

        def moved(indices: Any) -> list[int]:
            return [remap[int(i)] if i >= 0 else -1 for i in indices]

        sg.tensors = [sg.tensors[i] for i in sorted(used)]
        for op in sg.operators:
            op.inputs, op.outputs = moved(op.inputs), moved(op.outputs)
            if op.intermediates is not None:
                op.intermediates = moved(op.intermediates)
        sg.inputs, sg.outputs = moved(sg.inputs), moved(sg.outputs)
        for sig in tree.signatureDefs or []:
            if sig.subgraphIndex == 0:
                for io in list(sig.inputs or []) + list(sig.outputs or []):
                    io.tensorIndex = remap[io.tensorIndex]
        owners = [t for g in tree.subgraphs for t in g.tensors] + list(tree.metadata or [])
        kept = sorted({0} | {o.buffer for o in owners})
        bmap = {old: new for new, old in enumerate(kept)}
        tree.buffers = [tree.buffers[i] for i in kept]
        for o in owners:
            o.buffer = bmap[o.buffer]

    def fold_float16_dequantize(self) -> int:
        """DEQUANTIZE(float16 constant) -> a float32 constant holding the same values."""
        kept, folded = [], 0
        for op in self.sg.operators:
            source = int(op.inputs[0]) if self.op_type(op) == "DEQUANTIZE" else -1
            tensor = self.sg.tensors[source] if source >= 0 else None
            data = self.tree.buffers[tensor.buffer].data if tensor is not None else None
            if tensor is None or tensor.type != self.schema.TensorType.FLOAT16 or data is None \
                    or len(data) == 0:
                kept.append(op)
                continue
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float16)
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
            self.tree.buffers.append(buf)
            self.sg.tensors[int(op.outputs[0])].buffer = len(self.tree.buffers) - 1
            folded += 1
        self.sg.operators = kept
        return folded
