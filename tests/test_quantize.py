"""litert-quantizer recipes as edgeq builds them (no conversion)."""

from __future__ import annotations

import pytest

from edgeq.model.graph import OpInfo
from edgeq.quant.precision import Precision
from edgeq.quant.quantize import build_recipe

pytestmark = pytest.mark.unit


def _op(index: int, kind: str) -> OpInfo:
    return OpInfo(index, kind, (f"t{index}",), ((1, 4),), ((1, 4),), "float32", "float32",
                  ("float32",))


def _weights(rule: dict) -> str:
    return rule["op_config"]["weight_tensor_config"]["granularity"]


def test_cmsis_nn_gives_int16_fully_connected_per_tensor_weights_only() -> None:
    ops = [_op(0, "FULLY_CONNECTED"), _op(1, "SOFTMAX"), _op(2, "FULLY_CONNECTED")]
    mixed = build_recipe(ops, {0: Precision.INT16, 1: Precision.INT16}, cmsis_nn=True)
    by_regex = {r["regex"]: r for r in mixed}
    fc16 = next(r for r in mixed if r["operation"] == "FULLY_CONNECTED")
    assert _weights(fc16) == "TENSORWISE" and fc16["op_config"]["activation_tensor_config"][
        "num_bits"] == 16
    assert _weights(by_regex[".*"]) == "CHANNELWISE"  # int8 FCs keep per-channel weights
    assert all(_weights(r) == "CHANNELWISE" for r in mixed if r["operation"] == "SOFTMAX")
    everywhere = build_recipe(ops, {}, Precision.INT16, cmsis_nn=True)
    assert [(r["operation"], _weights(r)) for r in everywhere[1:]] == [
        ("*", "CHANNELWISE"), ("FULLY_CONNECTED", "TENSORWISE")]
    assert all(_weights(r) == "CHANNELWISE" for r in build_recipe(ops, {}, Precision.INT16))
