"""The precision of an op's activations: what plans, recipes and measured points speak of."""

from __future__ import annotations

import enum


class Precision(str, enum.Enum):
    """Activation precision of an op (weights are int8 in both)."""

    INT8 = "int8"  # a8w8: int8 activations, int8 weights
    INT16 = "int16"  # a16w8: int16 activations, int8 weights ("16x8")

    @property
    def activation_dtype(self) -> str:
        return self.value
