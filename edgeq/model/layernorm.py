"""`outlier-norm`: the residual stream of a transformer carries a few huge channels (BERT's
residual outliers: MiniLM's channel 99 reaches 220 where the median channel stays under 2), and
every decomposed LayerNorm on it, and every tensor between them, holds them scaled down instead:
the same float outputs, int8 ranges set by the ordinary channels.

Exact in float. With the stream scaled, S' = S * v (v = 1/s per channel, s >= 1, > 1 only on the
outlier channels), each LayerNorm computes

    mean  = FC(S', w)            w = s/D                      (was MEAN(S))
    d'    = S' - mean * v        = (S - mean) * v             (was S - mean)
    var   = MEAN(d'^2) + FC(d'^2, u)    u = (s^2 - 1)/D
    n'    = d' * rsqrt(var + eps)  = n * v,   out' = n' * gamma + beta * v = out * v

S' is never formed from S: the producers of the residual ADD that makes S are scaled instead (a
FULLY_CONNECTED's output rows, the one-hot FC that `outlier-split` places its outliers with, an
embedding table's columns), or the previous LayerNorm's output already is. A LayerNorm's scaled
output goes on to the next one's residual ADD as it is and into the matmuls that read it with
their weight columns divided by v; the last LayerNorm of a stream gives its readers the true
values (gamma, or an FC's weight columns, divided by v, else a MUL(x, 1/v)). One v per stream
(LayerNorms linked by residual ADDs): s is the most any of the stream's LayerNorm inputs and
outputs needs to bring a channel down to NORM_TARGET x its median channel; every s is m/k
(integers m <= 127, k) so the mean's int8 weights (s/D, 1/D among them) are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.model.editor import GraphEditor
from edgeq.model.transformer import _fully_connected

MIN_SCALE = 2.0  # a smaller gain is not worth four more ops per LayerNorm
NORM_TARGET = 2.5  # channels peaking above this many times the median channel are scaled down to it
MAX_SCALE = 16.0  # no channel is scaled down more than this (the default strength)
# Strengths `outlier-norm` tries; it keeps the one whose simulated int8 model errs least. Too
# weak leaves the range wide; too strong coarsens the outlier channels themselves, and a
# LayerNorm's variance leans on them (measured on MiniLM-L3: best at 24, 2.5x the error at 64).
STRENGTHS = (4.0, 8.0, 16.0, 32.0, 64.0)
MAX_SCALED = 32  # at most this many channels of one stream
MAX_LEVELS = 6  # distinct scales in one stream: one variance FULLY_CONNECTED each
MIN_CHANNELS = 64  # only hidden layers this wide (where transformer outliers live)


@dataclass
class _LayerNorm:
    x: int  # the input tensor S
    mean: Any  # MEAN(S) -> the mean tensor
    sub: Any  # SUB(S, mean) -> d
    var_mean: Any  # MEAN(d * d) -> var
    normalise: Any  # MUL(d, 1/std) -> the normalised values n

    @property
    def n(self) -> int:
        return int(self.normalise.outputs[0])


def find_layernorms(g: GraphEditor) -> list[_LayerNorm]:
    """The decomposed LayerNorms (SUB(x, MEAN(x)) = d, MEAN(d * d), d * 1/std) whose input x
    only they read, in graph order."""
    producers = {int(o): p for p in g.sg.operators for o in p.outputs}
    found = []
    for sub in g.sg.operators:
        norm = _match(g, sub, producers)
        if norm is not None:
            found.append(norm)
    return found


def _match(g: GraphEditor, sub: Any, producers: dict[int, Any]) -> _LayerNorm | None:
    if g.op_type(sub) != "SUB" or len(sub.inputs) != 2:
        return None
    x, m = (int(i) for i in sub.inputs)
    mean = producers.get(m)
    if mean is None or g.op_type(mean) != "MEAN" or int(mean.inputs[0]) != x or g.is_output(x):
        return None
    if len(g.sg.tensors[m].shape) != len(g.sg.tensors[x].shape) or g.constant(x) is not None:
        return None  # keep_dims: the mean broadcasts over the last axis only
    if {id(r) for r in g.readers(x)} != {id(mean), id(sub)}:
        return None
    d = int(sub.outputs[0])
    square = [r for r in g.readers(d) if g.op_type(r) == "MUL" and [int(i) for i in r.inputs] == [d, d]]
    scaled = [r for r in g.readers(d) if g.op_type(r) == "MUL" and r not in square]
    if len(square) != 1 or len(scaled) != 1 or len(g.readers(d)) != 2:
        return None
    var_readers = g.readers(int(square[0].outputs[0]))
    if len(var_readers) != 1 or g.op_type(var_readers[0]) != "MEAN":
        return None
    return _LayerNorm(x, mean, sub, var_readers[0], scaled[0])


@dataclass
class _Region:
    """What a LayerNorm's normalised values n flow through before anything else reads them:
    MUL/ADD ops with a per-channel constant (gamma, beta; `affine`), and the ops at its edge,
    each with the tensor it reads (`ends`)."""

    tensors: list[int]
    affine: list[Any]
    ends: list[tuple[Any, int]]


def output_region(g: GraphEditor, n: int) -> _Region:
    """The region from normalised values `n` (see _Region)."""
    region = _Region([n], [], [])
    frontier = [n]
    while frontier:
        tensor = frontier.pop()
        for reader in g.readers(tensor):
            if _per_channel_affine(g, reader, tensor):
                out = int(reader.outputs[0])
                region.affine.append(reader)
                region.tensors.append(out)
                frontier.append(out)
            else:
                region.ends.append((reader, tensor))
    return region


def _per_channel_affine(g: GraphEditor, op: Any, tensor: int) -> bool:
    """MUL or ADD of `tensor` and a constant per channel (a MUL's may be a scalar), no fused
    activation, not a graph output."""
    if g.op_type(op) not in ("MUL", "ADD") or g.is_output(int(op.outputs[0])) \
            or getattr(op.builtinOptions, "fusedActivationFunction", None):
        return False
    others = [int(i) for i in op.inputs if int(i) != tensor]
    width = int(g.sg.tensors[tensor].shape[-1])
    constant = g.constant(others[0]) if len(others) == 1 else None
    scalar_ok = g.op_type(op) == "MUL" and constant is not None and constant.size == 1
    return constant is not None and (scalar_ok or constant.shape[-1:] == (width,))


def residual_adds(g: GraphEditor, x: int) -> list[Any]:
    """The ADDs whose sum makes `x` (a LayerNorm's input): its producer and, through inputs
    only they read, the ADDs before it (a folded bias ADD, outlier-split's merge)."""
    producer = _producer(g, x)
    if _scalable_by(g, producer) != "add":
        return []
    found = [producer]
    for i in producer.inputs:
        if g.constant(int(i)) is None and len(g.readers(int(i))) == 1:
            found += residual_adds(g, int(i))
    return found


def streams(g: GraphEditor, norms: list[_LayerNorm]) -> list[list[_LayerNorm]]:
    """LayerNorms whose input the graph lets edgeq scale, in runs linked by residual ADDs (one
    LayerNorm's output region read by an ADD that sums into the next one's input)."""
    usable = [n for n in norms if _scalable_by(g, _producer(g, n.x))]
    runs: list[list[_LayerNorm]] = []
    for norm in usable:
        adds = {id(op) for op in residual_adds(g, norm.x)}
        linked = runs and any(id(op) in adds for op, _ in output_region(g, runs[-1][-1].n).ends)
        if linked:
            runs[-1].append(norm)
        else:
            runs.append([norm])
    return runs


def stream_scales(peaks: list[np.ndarray], strength: float = MAX_SCALE) -> np.ndarray | None:
    """Per channel, the factor s >= 1 that brings it down to about NORM_TARGET x the median
    channel's peak in every tensor of `peaks` (1 for the ordinary ones); None when no channel
    gains MIN_SCALE. The factors are a ladder of at most MAX_LEVELS values, each half the one
    above, each m/k for integers m <= 127 and k, and a channel takes the largest one not above
    what it needs: then every statistics weight is exact in int8 (see _correct_statistics)."""
    if not peaks or peaks[0].size < MIN_CHANNELS:
        return None
    wanted = np.ones_like(peaks[0], dtype=np.float64)
    for p in peaks:
        wanted = np.maximum(wanted, p / (NORM_TARGET * max(float(np.median(p)), 1e-12)))
    wanted[np.argsort(wanted)[::-1][MAX_SCALED:]] = 1.0
    wanted = np.minimum(wanted, strength)
    top = float(wanted.max())
    if top < MIN_SCALE:
        return None
    k = max(1, int(127.0 / top))
    ladder = sorted({m / k for m in (int(top * k / 2 ** j) for j in range(MAX_LEVELS)) if m > k})
    s = np.ones_like(wanted)
    for level in ladder:  # ascending: a channel ends on the largest level it reaches
        s[wanted >= level] = level
    return s


def scale_outlier_norms(g: GraphEditor, applied: list[dict[str, Any]],
                        peaks: Callable[[list[int]], dict[int, np.ndarray]],
                        strength: float = MAX_SCALE) -> None:
    """Scale each residual stream's outlier channels down (see the module docstring), none by
    more than `strength`."""
    norms = find_layernorms(g)
    if not norms:
        return
    regions = {id(n): output_region(g, n.n) for n in norms}
    measured = peaks(sorted({t for n in norms for t in [n.x, *regions[id(n)].tensors]}))
    before: dict[int, list[Any]] = {}  # id(op) -> new ops that go right before it
    for run in streams(g, norms):
        own = [[measured[t] for t in [n.x, *regions[id(n)].tensors]] for n in run]
        found = [stream_scales(p, strength) for p in own]
        if all(s is None for s in found):
            continue
        width = measured[run[0].x].size
        scales = [np.ones(width) if s is None else s for s in found]
        _rewrite_stream(g, run, scales, before)
        applied.append({"rewrite": "outlier-norm", "op": g.tensor_name(run[0].x),
                        "why": _stream_why(run, scales, [p for ps in own for p in ps])})
    ops = []
    for op in g.sg.operators:
        ops += before.get(id(op), [])
        ops.append(op)
    g.sg.operators = ops


def _stream_why(run: list[_LayerNorm], scales: list[np.ndarray], peaks: list[np.ndarray]) -> str:
    channels = sorted({int(c) for s in scales for c in np.flatnonzero(s > 1.0)})
    worst = np.max([p / max(float(np.median(p)), 1e-12) for p in peaks], axis=0)
    top = sorted(channels, key=lambda c: -worst[c])[:4]
    peak = max(float(p[top[0]]) for p in peaks)
    most = ", ".join(f"{s.max():.3g}" for s in scales)
    return (f"{len(run)} LayerNorm(s) on one residual stream whose channels {top}"
            f"{' ...' if len(channels) > 4 else ''} ({len(channels)} in all) peak at up to "
            f"{peak:.3g}, {worst[top[0]]:.3g}x the median channel: the stream carries them scaled "
            f"down (by up to {most} at each LayerNorm); each LayerNorm corrects its mean and "
            "variance, the matmuls reading the stream take those channels in a "
            "FULLY_CONNECTED of their own")


def _rewrite_stream(g: GraphEditor, run: list[_LayerNorm], scales: list[np.ndarray],
                    before: dict[int, list[Any]]) -> None:
    """Each LayerNorm k reads the stream scaled by v_k = 1 / scales[k]; between two LayerNorms
    the first one's gamma turns v_k into v_k+1."""
    scaled: set[int] = set()  # tensors that already hold their value times the next v
    for k, norm in enumerate(run):
        s = scales[k]
        v = (1.0 / s).astype(np.float32)
        _scale_producers(g, norm.x, v, before, scaled=scaled)
        if (s > 1.0).any():
            _correct_statistics(g, norm, s, v)
        region = output_region(g, norm.n)
        nxt = residual_adds(g, run[k + 1].x) if k + 1 < len(run) else []
        v_next = (1.0 / scales[k + 1]).astype(np.float32) if nxt else v
        carried = _region_scales(g, region, v, v_next)
        if nxt and _keeps_scaled(g, region, nxt, carried, v_next):
            _carry(g, region, carried)
            selected: dict[int, int] = {}  # region tensor -> its scaled channels, for all readers
            for reader, tensor in region.ends:
                if not any(reader is add for add in nxt) and (carried[tensor] != 1.0).any():
                    _split_columns(g, reader, tensor, 1.0 / carried[tensor], selected, before)
            scaled = {t for t in region.tensors if np.array_equal(carried[t], v_next)}
        else:
            scaled = set()
            if (s > 1.0).any():
                _unscale_readers(g, norm.n, s, before)


def _region_scales(g: GraphEditor, region: _Region, v: np.ndarray,
                   v_next: np.ndarray) -> dict[int, np.ndarray]:
    """The factor each region tensor will hold its value times: v from the normalised values
    on, v_next after a MUL by a per-channel constant (gamma), which can absorb the change."""
    scale = {region.tensors[0]: v}
    for op in region.affine:
        tensor = next(int(i) for i in op.inputs if int(i) in scale)
        scale[int(op.outputs[0])] = v_next if _per_channel_mul(g, op, tensor) else scale[tensor]
    return scale


def _per_channel_mul(g: GraphEditor, op: Any, tensor: int) -> bool:
    constant = next((g.constant(int(i)) for i in op.inputs if int(i) != tensor), None)
    return g.op_type(op) == "MUL" and constant is not None and constant.size > 1


def _carry(g: GraphEditor, region: _Region, scale: dict[int, np.ndarray]) -> None:
    """Make the region compute its values times `scale`: a per-channel MUL's constant times the
    change of factor, an ADD's constant (beta) times its output's factor."""
    for op in region.affine:
        tensor = next(int(i) for i in op.inputs if int(i) in scale)
        out = int(op.outputs[0])
        slot = next(j for j, i in enumerate(op.inputs) if int(i) != tensor)
        if _per_channel_mul(g, op, tensor):
            _scale_constant(g, op, slot, scale[out] / scale[tensor])
        elif g.op_type(op) == "ADD":
            _scale_constant(g, op, slot, scale[out])


def _correct_statistics(g: GraphEditor, norm: _LayerNorm, s: np.ndarray, v: np.ndarray) -> None:
    """The mean and variance of the true values, from the scaled input (module docstring)."""
    width = int(g.sg.tensors[norm.x].shape[-1])
    name = g.tensor_name(norm.x)
    mean_out = int(norm.mean.outputs[0])
    fc_mean = _fully_connected(g, norm.x, g.add_tensor(
        0, f"{name}/edgeq_mean_weights", (s / width).astype(np.float32)[None, :]), -1, mean_out)
    spread = g.add_tensor(norm.x, f"{name}/edgeq_mean_spread")
    spread_mul = g.binary_op("MUL", [mean_out, g.add_tensor(0, f"{name}/edgeq_v", v)], spread)
    norm.sub.inputs = [norm.x, spread]
    _replace(g, norm.mean, [fc_mean, spread_mul])
    square = int(norm.var_mean.inputs[0])
    var = int(norm.var_mean.outputs[0])
    total = g.add_tensor(var, f"{name}/edgeq_var_ordinary")
    norm.var_mean.outputs = [total]
    added = []
    # one FC per scale level: a single nonzero weight value per FC is exact in int8, where
    # several values (s^2 - 1)/D in one FC would be rounded to one step
    for level in sorted(set(s[s > 1.0].tolist())):
        weights = np.where(s == level, (level * level - 1.0) / width, 0.0).astype(np.float32)
        part = g.add_tensor(var, f"{name}/edgeq_var_scaled_{level:g}")
        summed = g.add_tensor(var, f"{name}/edgeq_var_sum_{level:g}")
        added += [_fully_connected(g, square, g.add_tensor(
            0, f"{name}/edgeq_var_weights_{level:g}", weights[None, :]), -1, part),
            g.binary_op("ADD", [total, part], summed)]
        total = summed
    added[-1].outputs = [var]
    _insert_after(g, norm.var_mean, added)


def _keeps_scaled(g: GraphEditor, region: _Region, residual: list[Any],
                  carried: dict[int, np.ndarray], v_next: np.ndarray) -> bool:
    """Whether everything at the region's edge can read it scaled: the next LayerNorm's residual
    ADDs (when what they read holds v_next: the stream goes on scaled), and FULLY_CONNECTEDs
    (their columns split, see _split_columns)."""
    for op, tensor in region.ends:
        if any(op is add for add in residual):
            if not np.array_equal(carried[tensor], v_next):
                return False
        elif not _splittable(g, op, tensor, carried[tensor]):
            return False
    return True


def _splittable(g: GraphEditor, op: Any, tensor: int, v: np.ndarray) -> bool:
    return _columns_of(g, op, tensor, v) is not None \
        and not getattr(op.builtinOptions, "fusedActivationFunction", None)


def _columns_of(g: GraphEditor, op: Any, tensor: int, v: np.ndarray) -> np.ndarray | None:
    """The weights of a FULLY_CONNECTED that reads `tensor` as its input, if 2-D and as wide
    as v."""
    if g.op_type(op) != "FULLY_CONNECTED" or int(op.inputs[0]) != tensor \
            or tensor in [int(i) for i in op.inputs[1:]]:
        return None
    weights = g.constant(int(op.inputs[1]))
    return weights if weights is not None and weights.ndim == 2 and weights.shape[1] == v.size \
        else None


def _split_columns(g: GraphEditor, fc: Any, tensor: int, s: np.ndarray, selected: dict[int, int],
                   before: dict[int, list[Any]]) -> None:
    """`fc` reads `tensor` scaled by v = 1/s: its ordinary columns stay, the scaled channels get
    a small FULLY_CONNECTED of their own (weights W[:, K] * s) reading them, selected from
    `tensor` by a one-hot FC, added back. Dividing W's columns by v in place would be exact
    too, but int8 weights are quantised per row, and a column grown by s sets every row's
    scale."""
    channels = [int(c) for c in np.flatnonzero(s > 1.0)]
    weights = g.constant(int(fc.inputs[1]))
    assert weights is not None
    out = int(fc.outputs[0])
    name = g.tensor_name(out)
    if tensor not in selected:
        one_hot = np.zeros((len(channels), s.size), np.float32)
        one_hot[range(len(channels)), channels] = 1.0
        picked = g.add_tensor(tensor, f"{g.tensor_name(tensor)}/edgeq_scaled_channels")
        shape = list(g.sg.tensors[tensor].shape)
        g.sg.tensors[picked].shape = [*shape[:-1], len(channels)]
        g.sg.tensors[picked].shapeSignature = None
        select = _fully_connected(g, tensor, g.add_tensor(0, f"{g.tensor_name(tensor)}/edgeq_pick",
                                                          one_hot), -1, picked)
        before.setdefault(id(fc), []).append(select)
        selected[tensor] = picked
    main_w = weights.copy()
    main_w[:, channels] = 0.0
    main = g.add_tensor(out, f"{name}/edgeq_ordinary")
    fc.inputs[1] = g.add_tensor(0, f"{name}/edgeq_ordinary_weights", main_w)
    fc.outputs = [main]
    part = g.add_tensor(out, f"{name}/edgeq_scaled_part")
    _insert_after(g, fc, [
        _fully_connected(g, selected[tensor], g.add_tensor(
            0, f"{name}/edgeq_scaled_weights", (weights[:, channels] * s[channels]).astype(np.float32)),
            -1, part),
        g.binary_op("ADD", [main, part], out)])


def _unscale_readers(g: GraphEditor, tensor: int, s: np.ndarray,
                     before: dict[int, list[Any]]) -> None:
    """`tensor` now holds its old value times v = 1/s: give each reader the old value back, by
    multiplying a MUL's per-channel constant (gamma) by s, splitting a FULLY_CONNECTED's
    scaled columns off (see _split_columns), else by a MUL(tensor, s) of its own."""
    name = g.tensor_name(tensor)
    selected: dict[int, int] = {}
    for reader in g.readers(tensor):
        slots = [k for k, i in enumerate(reader.inputs) if int(i) == tensor]
        if g.op_type(reader) == "MUL" and len(slots) == 1 \
                and _scale_constant(g, reader, 1 - slots[0], s.astype(np.float32)):
            continue
        if _splittable(g, reader, tensor, s):
            _split_columns(g, reader, tensor, s, selected, before)
            continue
        restored = g.add_tensor(tensor, f"{name}/edgeq_unscaled")
        inverse = g.add_tensor(0, f"{name}/edgeq_inverse_v", s.astype(np.float32))
        before.setdefault(id(reader), []).append(g.binary_op("MUL", [tensor, inverse], restored))
        reader.inputs = [restored if int(i) == tensor else int(i) for i in reader.inputs]


def _scale_constant(g: GraphEditor, op: Any, slot: int, factor: np.ndarray) -> bool:
    """Multiply `op`'s constant input `slot` by a per-channel `factor`, if it is one per channel."""
    value = g.constant(int(op.inputs[slot]))
    if value is None or value.ndim < 1 or value.shape[-1] != factor.size:
        return False
    op.inputs[slot] = g.add_tensor(0, f"{g.tensor_name(int(op.outputs[0]))}/edgeq_scaled_constant",
                                   (value * factor).astype(np.float32))
    return True


def _scale_producers(g: GraphEditor, tensor: int, v: np.ndarray, before: dict[int, list[Any]],
                     reader: Any | None = None, scaled: set[int] | None = None) -> None:
    """Make `tensor` hold its old value times v: scale the rows of the FULLY_CONNECTED that makes
    it (or the columns of the embedding table a GATHER reads), recurse through an ADD, or (when
    others read it too) give `reader` a MUL(tensor, v). `reader` None: the LayerNorm's own
    input, which `streams` accepted; `scaled`: tensors that hold their value times v already."""
    scaled = scaled if scaled is not None else set()
    if tensor in scaled:
        return
    producer = _producer(g, tensor)
    # the LayerNorm's input is read by its MEAN and SUB only (see _match)
    own = reader is None or (len(g.readers(tensor)) == 1 and not g.is_output(tensor))
    kind = _scalable_by(g, producer) if own else ""
    if kind == "rows":
        _scale_rows(g, producer, v)
    elif kind == "table":
        _scale_constant(g, producer, 0, v)
    elif kind == "add":
        for k, i in enumerate(list(producer.inputs)):
            if not _scale_constant(g, producer, k, v):
                _scale_producers(g, int(i), v, before, producer, scaled)
    else:
        assert reader is not None
        out = g.add_tensor(tensor, f"{g.tensor_name(tensor)}/edgeq_scaled")
        vector = g.add_tensor(0, f"{g.tensor_name(tensor)}/edgeq_v", v)
        before.setdefault(id(reader), []).append(g.binary_op("MUL", [tensor, vector], out))
        reader.inputs = [out if int(i) == tensor else int(i) for i in reader.inputs]


def _producer(g: GraphEditor, tensor: int) -> Any:
    """The op that writes `tensor` (None for inputs and constants)."""
    return next((p for p in g.sg.operators if tensor in [int(o) for o in p.outputs]), None)


def _scalable_by(g: GraphEditor, op: Any | None) -> str:
    """"rows": a FULLY_CONNECTED with constant 2-D weights; "table": a GATHER of rows of a
    constant table (an embedding); "add": an ADD (of activations, or of an activation and a
    constant as wide as the channels); "" otherwise (no fused activation in any case: scaling
    must commute with the op)."""
    if op is None or getattr(op.builtinOptions, "fusedActivationFunction", None):
        return ""
    kind = g.op_type(op)
    if kind == "FULLY_CONNECTED":
        weights = g.constant(int(op.inputs[1]))
        return "rows" if weights is not None and weights.ndim == 2 else ""
    if kind == "GATHER" and _channelwise(g, int(op.inputs[0]), int(op.outputs[0])) \
            and g.constant(int(op.inputs[0])) is not None \
            and getattr(op.builtinOptions, "axis", 0) == 0:
        return "table"
    if kind == "ADD" and any(g.constant(int(i)) is None for i in op.inputs) \
            and all(_channelwise(g, int(i), int(op.outputs[0])) for i in op.inputs):
        return "add"
    return ""


def _channelwise(g: GraphEditor, tensor: int, out: int) -> bool:
    """An activation, or a constant whose last axis is `out`'s channels (scalable per channel)."""
    constant = g.constant(tensor)
    width = int(g.sg.tensors[out].shape[-1])
    return constant is None or (constant.ndim >= 1 and constant.shape[-1] == width)


def _scale_rows(g: GraphEditor, fc: Any, v: np.ndarray) -> None:
    weights = g.constant(int(fc.inputs[1]))
    assert weights is not None
    bias = g.constant(int(fc.inputs[2])) if len(fc.inputs) > 2 and int(fc.inputs[2]) >= 0 else None
    name = g.tensor_name(int(fc.outputs[0]))
    fc.inputs[1] = g.add_tensor(0, f"{name}/edgeq_scaled_weights", weights * v[:, None])
    if bias is not None:
        fc.inputs[2] = g.add_tensor(0, f"{name}/edgeq_scaled_bias", bias * v)


def _replace(g: GraphEditor, op: Any, new: list[Any]) -> None:
    k = next(k for k, o in enumerate(g.sg.operators) if o is op)
    g.sg.operators[k:k + 1] = new


def _insert_after(g: GraphEditor, op: Any, new: list[Any]) -> None:
    k = next(k for k, o in enumerate(g.sg.operators) if o is op)
    g.sg.operators[k + 1:k + 1] = new
