"""What each op does in the model, found from the graph's structure (not from names, which
differ between exporters): the op roles the search can move to int16 as one candidate.

A transformer's precision problems live in a few roles: the residual stream (the ADDs that
carry it, with its outlier channels) and the LayerNorms that read it are cheap elementwise
ops; the matmuls are expensive in int16 (LiteRT has only reference 16x8 kernels for them).
"""

from __future__ import annotations

from collections.abc import Iterable

from edgeq.model.graph import OpInfo

MATMUL_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
ACTIVATION_OPS = {"GELU", "TANH", "LOGISTIC", "RELU", "RELU6", "HARD_SWISH", "LEAKY_RELU"}
ROLE_ORDER = ("layernorm", "residual", "residual-stream", "softmax", "attention-matmul",
              "matmul", "activation")  # then residual-stream[k], one per LayerNorm


class _Graph:
    def __init__(self, ops: list[OpInfo]) -> None:
        self.ops = ops
        self.producer = {name: op for op in ops for name in op.outputs}
        self.readers: dict[str, list[OpInfo]] = {}
        for op in ops:
            for name in op.inputs:
                self.readers.setdefault(name, []).append(op)

    def made_by(self, name: str, kind: str) -> OpInfo | None:
        op = self.producer.get(name)
        return op if op is not None and op.op == kind else None

    def activations(self, op: OpInfo) -> list[str]:
        """Inputs that are not constants."""
        flags = op.constant_inputs or (False,) * len(op.inputs)
        return [n for n, const in zip(op.inputs, flags) if not const]


def layernorms(ops: list[OpInfo]) -> list[tuple[str, set[int]]]:
    """(input tensor, op indices) of each decomposed LayerNorm: SUB(x, MEAN(x)) = d, then
    MEAN(d*d) (+eps) -> RSQRT or 1/SQRT -> d*inv (*gamma) (+beta)."""
    g = _Graph(ops)
    found = []
    for sub in (op for op in ops if op.op == "SUB" and len(op.inputs) == 2):
        x, m = sub.inputs
        mean = _mean_of(g, m, x)
        if not mean:
            continue
        members = {op.index for op in mean} | {sub.index} | _steps(g, sub, {x, m})
        if len(members) >= 5:
            found.append((x, members))
    return found


def _mean_of(g: _Graph, m: str, x: str) -> list[OpInfo]:
    """The ops that make `m` the mean of `x`: MEAN(x), or as `outlier-norm` writes it,
    MUL(FULLY_CONNECTED(x), v) (a weighted mean, spread back over the channels)."""
    mean = g.made_by(m, "MEAN")
    if mean is not None:
        return [mean] if mean.inputs[0] == x else []
    spread = g.made_by(m, "MUL")
    fc = g.made_by(spread.inputs[0], "FULLY_CONNECTED") if spread is not None else None
    return [spread, fc] if spread is not None and fc is not None and fc.inputs[0] == x else []


_NORM_OPS = ("MEAN", "ADD", "RSQRT", "SQRT", "DIV", "MUL", "FULLY_CONNECTED")


def _steps(g: _Graph, sub: OpInfo, known: set[str]) -> set[int]:
    """The ops after the centring SUB that read only constants and the LayerNorm's own tensors
    (the variance and scale/shift steps; never the residual ADD or a pooling MUL after it, which
    read other activations, nor a matmul: a FULLY_CONNECTED counts only when it reduces to one
    channel, `outlier-norm`'s statistics)."""
    members: set[int] = set()
    known = known | {sub.name}
    frontier = [sub]
    while frontier:
        for op in g.readers.get(frontier.pop().name, []):
            statistic = op.op != "FULLY_CONNECTED" or op.output_shapes[0][-1:] == (1,)
            if op.index in members or op.op not in _NORM_OPS or not statistic \
                    or any(name not in known for name in g.activations(op)):
                continue
            members.add(op.index)
            known.add(op.name)
            frontier.append(op)
    return members


def op_roles(ops: list[OpInfo]) -> dict[str, set[int]]:
    """Role name -> op indices, for the roles this model has (see ROLE_ORDER)."""
    g = _Graph(ops)
    norms = layernorms(ops)
    roles: dict[str, set[int]] = {"layernorm": set().union(*(m for _, m in norms)) if norms else set()}
    norm_inputs = {x for x, _ in norms}
    residual = {op.index for op in ops if op.op == "ADD" and op.name in norm_inputs
                and len(g.activations(op)) == 2}
    feeding = {op.index for op in ops if op.op == "ADD" and len(g.activations(op)) == 2
               and any(r.index in residual for r in g.readers.get(op.name, []))}
    roles["residual"] = residual | feeding
    roles["residual-stream"] = roles["layernorm"] | roles["residual"]
    segments = _segments(g, norms, roles["residual"])
    softmax = {op.index for op in ops if op.op == "SOFTMAX"}
    roles["softmax"] = softmax | {g.producer[op.inputs[0]].index for op in ops
                                  if op.index in softmax and op.inputs[0] in g.producer
                                  and g.producer[op.inputs[0]].op == "ADD"}
    roles["attention-matmul"] = {op.index for op in ops if op.op == "BATCH_MATMUL"
                                 and len(g.activations(op)) == 2}
    roles["matmul"] = {op.index for op in ops if op.op in MATMUL_OPS or
                       (op.op == "BATCH_MATMUL" and len(g.activations(op)) < 2)}
    roles["activation"] = {op.index for op in ops if op.op in ACTIVATION_OPS}
    ordered = {name: roles[name] for name in ROLE_ORDER if roles.get(name)}
    if len(segments) > 1:  # one LayerNorm: its segment is the whole residual stream
        ordered.update(segments)
    return ordered


def _segments(g: _Graph, norms: list[tuple[str, set[int]]],
              residual: set[int]) -> dict[str, set[int]]:
    """`residual-stream[k]`: LayerNorm k (in graph order) with the residual ADDs that make its
    input: one int16 island each, for a search that can afford a few but not all of them."""
    found = {}
    for k, (x, members) in enumerate(norms):
        island = set(members)
        frontier = [x]
        while frontier:
            op = g.producer.get(frontier.pop())
            if op is not None and op.index in residual and op.index not in island:
                island.add(op.index)
                frontier += g.activations(op)
        found[f"residual-stream[{k}]"] = island
    return found


def within(roles: dict[str, set[int]], allowed: Iterable[int]) -> dict[str, frozenset[int]]:
    """Roles restricted to the ops that can be int16; empty ones dropped."""
    keep = set(allowed)
    return {name: frozenset(members & keep) for name, members in roles.items() if members & keep}
