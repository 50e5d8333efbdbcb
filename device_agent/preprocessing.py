"""Preprocessing contracts: input normalisation moved out of a model (edgeq `--rewrite
preprocessing`) travels with it and is applied on the device exactly as on the host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_APPLY = {"sub": np.subtract, "add": np.add, "mul": np.multiply, "div": np.divide}
_SYMBOL = {"sub": "-", "add": "+", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class Contract:
    """Apply `steps` (elementwise, in order, in float32) to input `input` before inference."""

    input: str
    steps: tuple[tuple[str, np.ndarray], ...]  # (sub|add|mul|div, constant)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The preprocessed float32 input."""
        y = np.asarray(x, np.float32)
        for op, c in self.steps:
            y = _APPLY[op](y, c)
        return y.astype(np.float32)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contract:
        steps = []
        for s in d["steps"]:
            if s["op"] not in _APPLY:
                raise ValueError(f"preprocessing step '{s['op']}' unknown; expected one of "
                                 f"{', '.join(_APPLY)}")
            steps.append((s["op"], np.asarray(s["values"], np.float32).reshape(s["shape"])))
        return cls(d["input"], tuple(steps))

    def formula(self) -> str:
        text = self.input
        for k, (op, _) in enumerate(self.steps):
            text = f"({text} {_SYMBOL[op]} c{k})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "formula": self.formula(), "dtype": "float32",
                "steps": [{"op": op, "constant": f"c{k}", "shape": list(c.shape),
                           "values": c.ravel().tolist()} for k, (op, c) in enumerate(self.steps)]}
