"""`--int16 OPSPEC`: an op type (BATCH_MATMUL) or a regex on the op's output tensor name."""

from __future__ import annotations

import re

from edgeq.errors import InputError
from edgeq.model.graph import OpInfo

_OP_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def select_ops(specs: list[str] | tuple[str, ...], ops: list[OpInfo]) -> set[int]:
    """Op indices matched by any spec; every spec must match at least one float op."""
    candidates = [op for op in ops if op.activation_dtype == "float32"]
    types = sorted({op.op for op in candidates})
    chosen: set[int] = set()
    for spec in specs:
        if _OP_TYPE.match(spec):
            hits = {op.index for op in candidates if op.op == spec}
            if not hits:
                raise InputError(f"--int16 {spec}: the model has no {spec} op; its op types are "
                                 f"{', '.join(types)} (or give a regex on an op's output name)")
        else:
            try:
                pattern = re.compile(spec)
            except re.error as e:
                raise InputError(f"--int16 {spec!r}: not a valid regex ({e})") from e
            hits = {op.index for op in candidates if pattern.search(op.name)}
            if not hits:
                raise InputError(f"--int16 {spec!r}: matches no op output name; expected an op "
                                 f"type ({', '.join(types)}) or a regex on op output names")
        chosen |= hits
    return chosen
