"""Rewrites for the graphs real transformers arrive as (PyTorch -> ONNX -> onnx2tf, Keras), each
proved on float outputs by `rewrite.rewrite` like every other rewrite:

- `matmul-fc`: BATCH_MATMUL with a constant 2-D weight (how onnx2tf writes nn.Linear) ->
  FULLY_CONNECTED (weights transposed, keep_num_dims), and the bias ADD that follows folded
  into it. litert-quantizer's per-channel recipe on such a BATCH_MATMUL outputs exactly 0 in
  LiteRT; FULLY_CONNECTED is the op every runtime has fast int8 kernels for.
- `index-fixup`: LESS(i, 0) / ADD(i, n) / SELECT (negative indices wrap, as in PyTorch) before a
  GATHER -> the GATHER takes i. Dead for non-negative ids (every token id); TFLite Micro has no
  SELECT, so this is what lets the model run there. The proof fails when the data has a
  negative index.
- `rsqrt`: DIV(1, SQRT(v)) (LayerNorm's 1/std) -> RSQRT(v). In int8 a variance that rounds to
  zero made the DIV fail (division by the zero point); RSQRT saturates instead.
- `outlier-split`: a FULLY_CONNECTED whose output has a few huge channels (BERT's residual
  outliers: one channel at 197, the rest under 7) computes them in a separate small FC added
  back, so int8 keeps the other channels' precision (see `split_outliers`).
- `mask-magnitude`: an attention-mask constant (float32 min, -1e9, -1e4: MUL(1 - mask, c) before
  the scores' ADD and SOFTMAX) -> the smallest magnitude that leaves the float outputs equal on
  the calibration data (times a safety margin). At -3.4e38 calibration cannot give the ADD a
  range that holds both the mask and the scores; at -36 (MiniLM's) it can.
- `gelu-tanh` (opt-in, an approximation with its own tolerance): GELU -> its tanh form from
  MUL/ADD/TANH, for TFLite Micro, which has no GELU kernel.
- `int32-ids` (opt-in: the model then takes int32): int64 inputs -> int32, for TFLite Micro.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeq.model.editor import GraphEditor
from edgeq.model.flatbuffer import pack_tree

MASK_MIN_MAGNITUDE = 1e3  # a MUL constant at least this large (negative) feeding a softmax
MASK_LADDER = (8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 1e3, 1e4)
MASK_MARGIN = 1.5  # the chosen magnitude is this times the smallest one that proved equal


def matmul_to_fully_connected(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    """BATCH_MATMUL(x, constant W[K, N]) (+ ADD of a constant bias[N]) -> FULLY_CONNECTED."""
    ops = []
    removed: set[int] = set()
    for op in g.sg.operators:
        if id(op) in removed:
            continue
        fc = _as_fully_connected(g, op)
        if fc is None:
            ops.append(op)
            continue
        new_op, bias_add = fc
        if bias_add is not None:
            removed.add(id(bias_add))
        ops.append(new_op)
        out = int(new_op.outputs[0])
        applied.append({"rewrite": "matmul-fc", "op": g.tensor_name(out),
                        "why": "BATCH_MATMUL with constant weights -> FULLY_CONNECTED"
                               + (" with the bias ADD folded in" if bias_add is not None else "")
                               + " (int8 BATCH_MATMUL with per-channel weights computes 0 in "
                                 "LiteRT; FULLY_CONNECTED has fast int8 kernels everywhere)"})
    g.sg.operators = ops


def _as_fully_connected(g: GraphEditor, op: Any) -> tuple[Any, Any | None] | None:
    if g.op_type(op) != "BATCH_MATMUL" or len(op.inputs) != 2:
        return None
    x, w = int(op.inputs[0]), int(op.inputs[1])
    weights = g.constant(w)
    options = op.builtinOptions
    if weights is None or getattr(options, "adjX", False) or g.constant(x) is not None:
        return None
    weights = weights.reshape(weights.shape[-2:]) if weights.ndim == 3 and weights.shape[0] == 1 \
        else weights
    if weights.ndim != 2:
        return None
    kernel = weights if getattr(options, "adjY", False) else weights.T  # FC wants [N, K]
    out = int(op.outputs[0])
    bias_add, bias = _bias_add(g, out, kernel.shape[0])
    final = int(bias_add.outputs[0]) if bias_add is not None else out
    name = g.tensor_name(final)
    fc = _fully_connected(g, x, g.add_tensor(w, f"{name}/edgeq_fc_weights",
                                             np.ascontiguousarray(kernel)),
                          g.add_tensor(w, f"{name}/edgeq_fc_bias", bias) if bias is not None else -1,
                          final)
    if bias_add is not None:
        fc.builtinOptions.fusedActivationFunction = getattr(
            bias_add.builtinOptions, "fusedActivationFunction", 0)
    return fc, bias_add


def _bias_add(g: GraphEditor, out: int, n: int) -> tuple[Any | None, np.ndarray | None]:
    """The ADD right after a matmul that adds a constant [n] vector, if it is the only reader."""
    readers = g.readers(out)
    if len(readers) != 1 or g.is_output(out) or g.op_type(readers[0]) != "ADD":
        return None, None
    add = readers[0]
    other = [int(i) for i in add.inputs if int(i) != out]
    value = g.constant(other[0]) if len(other) == 1 else None
    if value is None or value.size != n or value.shape[-1] != n:
        return None, None
    return add, value.reshape(n).astype(np.float32)


def remove_index_fixups(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    """SELECT(LESS(i, 0), ADD(i, n), i) -> i, for every reader of the SELECT."""
    dead: list[Any] = []
    producers = {int(o): p for p in g.sg.operators for o in p.outputs}
    for op in g.sg.operators:
        fixup = _index_fixup(g, op, producers)
        if fixup is None:
            continue
        index, select_out, parts = fixup
        for reader in g.readers(select_out):
            reader.inputs = [index if int(i) == select_out else int(i) for i in reader.inputs]
        dead += parts
        applied.append({"rewrite": "index-fixup", "op": g.tensor_name(select_out),
                        "why": "LESS/ADD/SELECT wraps negative indices; dead for non-negative "
                               "ids (proved on the calibration data), and TFLite Micro has no "
                               "SELECT: the GATHER takes the ids directly"})
    g.sg.operators = [op for op in g.sg.operators if not any(op is d for d in dead)]


def _index_fixup(g: GraphEditor, op: Any,
                 producers: dict[int, Any]) -> tuple[int, int, list[Any]] | None:
    if g.op_type(op) not in ("SELECT", "SELECT_V2") or len(op.inputs) != 3:
        return None
    cond, wrapped, index = (int(i) for i in op.inputs)
    select_out = int(op.outputs[0])
    less, add = producers.get(cond), producers.get(wrapped)
    if less is None or add is None or g.op_type(less) != "LESS" or g.op_type(add) != "ADD":
        return None
    zero = g.int_constant(int(less.inputs[1]))
    if int(less.inputs[0]) != index or zero is None or zero.size != 1 or int(zero[0]) != 0:
        return None
    if index not in [int(i) for i in add.inputs] or g.is_output(select_out):
        return None
    only_here = all(len(g.readers(int(p.outputs[0]))) == 1 for p in (less, add))
    return (index, select_out, [op, less, add]) if only_here else None


def fuse_rsqrt(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    """DIV(1, SQRT(v)) -> RSQRT(v)."""
    producers = {int(o): p for p in g.sg.operators for o in p.outputs}
    dead = []
    for k, op in enumerate(g.sg.operators):
        if g.op_type(op) != "DIV" or len(op.inputs) != 2:
            continue
        one = g.constant(int(op.inputs[0]))
        sqrt = producers.get(int(op.inputs[1]))
        if one is None or one.size != 1 or float(one.reshape(-1)[0]) != 1.0 or sqrt is None \
                or g.op_type(sqrt) != "SQRT" or len(g.readers(int(sqrt.outputs[0]))) != 1:
            continue
        out = int(op.outputs[0])
        rsqrt = g.schema.OperatorT()
        rsqrt.opcodeIndex, rsqrt.inputs, rsqrt.outputs = g.opcode("RSQRT"), [int(sqrt.inputs[0])], [out]
        g.sg.operators[k] = rsqrt
        dead.append(sqrt)
        applied.append({"rewrite": "rsqrt", "op": g.tensor_name(out),
                        "why": "DIV(1, SQRT(v)) -> RSQRT(v): one op, and an int8 variance that "
                               "rounds to zero saturates instead of failing the DIV"})
    g.sg.operators = [op for op in g.sg.operators if not any(op is d for d in dead)]


def mask_constants(g: GraphEditor) -> list[tuple[int, float]]:
    """(tensor, value) of every attention-mask constant: a huge negative scalar a MUL scales
    the mask with, whose product an ADD puts on scores that a SOFTMAX reads."""
    found = []
    for op in g.sg.operators:
        if g.op_type(op) != "MUL" or len(op.inputs) != 2:
            continue
        for i in (int(j) for j in op.inputs):
            value = g.constant(i)
            if value is None or value.size != 1 or float(value.reshape(-1)[0]) > -MASK_MIN_MAGNITUDE:
                continue
            if _feeds_softmax(g, int(op.outputs[0])):
                found.append((i, float(value.reshape(-1)[0])))
    return found


_SHAPE_OPS = {"RESHAPE", "EXPAND_DIMS", "SQUEEZE", "TRANSPOSE", "BROADCAST_TO", "CAST"}


def _feeds_softmax(g: GraphEditor, tensor: int) -> bool:
    """`tensor` (through shape-only ops) is added to what a SOFTMAX reads."""
    for reader in g.readers(tensor):
        out = int(reader.outputs[0])
        kind = g.op_type(reader)
        if kind in _SHAPE_OPS and _feeds_softmax(g, out):
            return True
        if kind == "ADD" and any(g.op_type(r) == "SOFTMAX" for r in g.readers(out)):
            return True
    return False


def set_scalar(g: GraphEditor, tensor: int, value: float) -> None:
    """Give a float32 scalar constant a new value (its own buffer: it may have been shared)."""
    dims = g.sg.tensors[tensor].shape
    shape = [] if dims is None else [int(d) for d in dims]
    buf = g.schema.BufferT()
    buf.data = np.frombuffer(np.full(shape, value, np.float32).tobytes(), np.uint8)
    g.tree.buffers.append(buf)
    g.sg.tensors[tensor].buffer = len(g.tree.buffers) - 1


def shrink_masks(g: GraphEditor, applied: list[dict[str, Any]],
                 outputs_equal: Callable[[bytes], bool]) -> None:
    """Replace every mask constant by the smallest ladder magnitude M for which the model with
    every mask at -M has `outputs_equal` to the original's, times MASK_MARGIN."""
    masks = mask_constants(g)
    chosen = None
    for magnitude in MASK_LADDER if masks else ():
        for tensor, _ in masks:
            set_scalar(g, tensor, -magnitude)
        if outputs_equal(pack_tree(g.tree)):
            chosen = magnitude
            break
    if chosen is None:  # nothing to do, or no tried magnitude is equal: as it was
        for tensor, value in masks:
            set_scalar(g, tensor, value)
        return
    magnitude = min(chosen * MASK_MARGIN, abs(max(v for _, v in masks)))
    for tensor, value in masks:
        set_scalar(g, tensor, -magnitude)
        applied.append({"rewrite": "mask-magnitude", "op": g.tensor_name(tensor),
                        "why": f"attention mask constant {value:.3g} -> {-magnitude:g} (the "
                               f"smallest tried magnitude with equal float outputs on the "
                               f"calibration data was {chosen:g}, times {MASK_MARGIN:g}): int8/16 "
                               "ranges can then hold the scores as well as the mask"})


OUTLIER_RATIO = 8.0  # a channel whose max |value| exceeds this many times the median channel's
MAX_OUTLIERS = 4  # channels split out of one FULLY_CONNECTED
MIN_CHANNELS = 64  # only hidden layers this wide (where transformer outliers live)


def outlier_channels(peaks: np.ndarray) -> list[int]:
    """Output channels whose calibration peak dwarfs the rest (BERT's residual outliers)."""
    if peaks.size < MIN_CHANNELS:
        return []
    median = float(np.median(peaks))
    ranked = [int(c) for c in np.argsort(peaks)[::-1][:MAX_OUTLIERS]]
    return sorted(c for c in ranked if peaks[c] > OUTLIER_RATIO * max(median, 1e-12))


def split_outliers(g: GraphEditor, applied: list[dict[str, Any]],
                   peaks: Callable[[list[int]], dict[int, np.ndarray]]) -> None:
    """FULLY_CONNECTED whose output has a few outlier channels -> the same FC with those rows
    zeroed (its range is now the other channels') + a tiny FC computing only the outliers,
    placed back by a one-hot FC, + ADD. Exact in float; in int8 the wide FC's output scale
    no longer spans the outliers, and the ADD (with the residual stream after it) is the cheap
    place for int16. `peaks(tensors)` gives each tensor's per-channel max |value| on the
    calibration data."""
    fcs = [op for op in g.sg.operators if g.op_type(op) == "FULLY_CONNECTED"
           and len(op.inputs) == 3 and int(op.inputs[2]) >= 0
           and g.constant(int(op.inputs[1])) is not None and g.constant(int(op.inputs[2])) is not None
           and not g.is_output(int(op.outputs[0]))
           and not getattr(op.builtinOptions, "fusedActivationFunction", 0)]
    if not fcs:
        return
    measured = peaks([int(op.outputs[0]) for op in fcs])
    ops = []
    for op in g.sg.operators:
        ops.append(op)
        out = int(op.outputs[0])
        channels = outlier_channels(measured[out]) if any(op is f for f in fcs) else []
        if channels:
            ops += _split(g, op, channels)
            applied.append({"rewrite": "outlier-split", "op": g.tensor_name(out),
                            "why": f"output channels {channels} peak at "
                                   f"{', '.join(f'{measured[out][c]:.3g}' for c in channels)}, "
                                   f"the median channel at {float(np.median(measured[out])):.3g}: "
                                   "computed by their own small FULLY_CONNECTED and added back, "
                                   "so one int8 scale no longer has to span them"})
    g.sg.operators = ops


def _split(g: GraphEditor, fc: Any, channels: list[int]) -> list[Any]:
    """Rewire `fc` (in place) to compute the other channels; return the ops that add the
    outlier channels back into its original output tensor."""
    out = int(fc.outputs[0])
    name = g.tensor_name(out)
    x, weights, bias = int(fc.inputs[0]), g.constant(int(fc.inputs[1])), g.constant(int(fc.inputs[2]))
    assert weights is not None and bias is not None
    kept_w, kept_b = weights.copy(), bias.copy()
    kept_w[channels], kept_b[channels] = 0.0, 0.0
    main = g.add_tensor(out, f"{name}/edgeq_main")
    fc.inputs = [x, g.add_tensor(0, f"{name}/edgeq_main_weights", kept_w),
                 g.add_tensor(0, f"{name}/edgeq_main_bias", kept_b)]
    fc.outputs = [main]
    outliers = g.add_tensor(out, f"{name}/edgeq_outliers")
    shape = list(g.sg.tensors[out].shape)
    g.sg.tensors[outliers].shape = [*shape[:-1], len(channels)]
    g.sg.tensors[outliers].shapeSignature = None
    placed = g.add_tensor(out, f"{name}/edgeq_outliers_placed")
    one_hot = np.zeros((shape[-1], len(channels)), np.float32)
    one_hot[channels, range(len(channels))] = 1.0
    merge = g.binary_op("ADD", [main, placed], out)
    return [_fully_connected(g, x, g.add_tensor(0, f"{name}/edgeq_outlier_weights",
                                                   weights[channels]),
                             g.add_tensor(0, f"{name}/edgeq_outlier_bias", bias[channels]),
                             outliers),
            _fully_connected(g, outliers, g.add_tensor(0, f"{name}/edgeq_place", one_hot), -1,
                             placed),
            merge]


def _fully_connected(g: GraphEditor, x: int, weights: int, bias: int, out: int) -> Any:
    fc = g.schema.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = g.opcode("FULLY_CONNECTED"), [x, weights, bias], [out]
    fc.builtinOptionsType = g.schema.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = g.schema.FullyConnectedOptionsT()
    fc.builtinOptions.keepNumDims = True
    return fc


GELU_TANH_TOLERANCE = 1e-2  # of the output range: the tanh form is within 5e-4 of GELU itself
_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


def gelu_to_tanh(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    """GELU -> 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))), from MUL/ADD/TANH: TFLite
    Micro has no GELU kernel. An approximation (opt-in), proved within GELU_TANH_TOLERANCE."""
    ops = []
    for op in g.sg.operators:
        if g.op_type(op) != "GELU":
            ops.append(op)
            continue
        x, out = int(op.inputs[0]), int(op.outputs[0])
        name = g.tensor_name(out)
        step = {s: g.add_tensor(out, f"{name}/edgeq_gelu_{s}")
                for s in ("square", "cubic", "slope", "arg", "tanh", "one_plus", "x_times")}
        const = {s: g.add_tensor(0, f"{name}/edgeq_gelu_c_{s}", np.array([v], np.float32))
                 for s, v in (("a", 0.044715 * _SQRT_2_OVER_PI), ("b", _SQRT_2_OVER_PI),
                              ("one", 1.0), ("half", 0.5))}
        tanh = g.schema.OperatorT()
        tanh.opcodeIndex, tanh.inputs, tanh.outputs = g.opcode("TANH"), [step["arg"]], [step["tanh"]]
        ops += [g.binary_op("MUL", [x, x], step["square"]),
                g.binary_op("MUL", [step["square"], const["a"]], step["cubic"]),
                g.binary_op("ADD", [step["cubic"], const["b"]], step["slope"]),
                g.binary_op("MUL", [x, step["slope"]], step["arg"]),
                tanh,
                g.binary_op("ADD", [step["tanh"], const["one"]], step["one_plus"]),
                g.binary_op("MUL", [x, step["one_plus"]], step["x_times"]),
                g.binary_op("MUL", [step["x_times"], const["half"]], out)]
        applied.append({"rewrite": "gelu-tanh", "op": name,
                        "why": "GELU -> its tanh form from MUL/ADD/TANH (TFLite Micro has no GELU "
                               f"kernel); an approximation, accepted within {GELU_TANH_TOLERANCE:g} "
                               "of the float outputs' range"})
    g.sg.operators = ops


_PASS_THROUGH = {"RESHAPE", "EXPAND_DIMS", "SQUEEZE", "TRANSPOSE", "GATHER", "SLICE",
                 "STRIDED_SLICE", "CONCATENATION"}


def int64_inputs_to_int32(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    """int64 graph inputs (token ids as PyTorch exports them) -> int32: TFLite Micro's kernels
    take no int64. A CAST to int32 right after the input goes; shape-only ops that pass the
    ids on (to an output, say) carry int32 too. Changes what the model takes (int32 ids), so
    opt-in; proved equal for ids below 2**31."""
    int64, int32 = g.schema.TensorType.INT64, g.schema.TensorType.INT32
    for index in (int(i) for i in g.sg.inputs):
        tensor = g.sg.tensors[index]
        if tensor.type != int64:
            continue
        tensor.type = int32
        _retype_readers(g, index, int64, int32)
        applied.append({"rewrite": "int32-ids", "op": g.tensor_name(index),
                        "why": "int64 input -> int32 (TFLite Micro's kernels take no int64; "
                               "feed int32 ids)"})


def _retype_readers(g: GraphEditor, tensor: int, old: int, new: int) -> None:
    for reader in g.readers(tensor):
        out = int(reader.outputs[0])
        out_type = g.sg.tensors[out].type
        if g.op_type(reader) == "CAST" and out_type == new:  # now a no-op: readers take the input
            for later in g.readers(out):
                later.inputs = [tensor if int(i) == out else int(i) for i in later.inputs]
            g.sg.outputs = [tensor if int(i) == out else int(i) for i in g.sg.outputs]
            g.sg.operators = [op for op in g.sg.operators if op is not reader]
        elif g.op_type(reader) in _PASS_THROUGH and out_type == old and \
                int(reader.inputs[0]) == tensor:
            g.sg.tensors[out].type = new
            _retype_readers(g, out, old, new)
        elif g.op_type(reader) in _ELEMENTWISE and out_type == old and all(
                int(i) == tensor or g.int_constant(int(i)) is not None for i in reader.inputs):
            for i in (int(i) for i in reader.inputs if int(i) != tensor):
                _to_int32_constant(g, i)
            g.sg.tensors[out].type = new
            _retype_readers(g, out, old, new)


_ELEMENTWISE = {"MUL", "ADD", "SUB", "MAXIMUM", "MINIMUM"}


def _to_int32_constant(g: GraphEditor, index: int) -> None:
    """An int64 constant as int32 (its own buffer: it may be shared)."""
    value = g.int_constant(index)
    if value is None or g.sg.tensors[index].type == g.schema.TensorType.INT32:
        return
    buf = g.schema.BufferT()
    buf.data = np.frombuffer(value.astype(np.int32).tobytes(), np.uint8)
    g.tree.buffers.append(buf)
    g.sg.tensors[index].buffer = len(g.tree.buffers) - 1
    g.sg.tensors[index].type = g.schema.TensorType.INT32
