"""Per-op precision -> litert-quantizer recipe -> quantised model, then proof of what it did.

litert-quantizer silently skips a rule it cannot apply, so after quantising edgeq reads the
model back and compares every op's precision with what was asked (`verify_precisions`).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeq.capture import captured_output
from edgeq.errors import ModelError
from edgeq.model.flatbuffer import inline_buffers
from edgeq.model.graph import OpInfo, graph_ops
from edgeq.quant.calibrate import Statistics
from edgeq.quant.precision import Precision

RECIPE_SCHEMA_VERSION = 1
ALGORITHM = "min_max_uniform_quantize"


def _op_config(precision: Precision, per_tensor_weights: bool = False) -> dict[str, Any]:
    bits = 16 if precision is Precision.INT16 else 8
    return {
        "activation_tensor_config": {"num_bits": bits, "symmetric": bits == 16,
                                     "granularity": "TENSORWISE", "dtype": "INT"},
        "weight_tensor_config": {"num_bits": 8, "symmetric": True,
                                 "granularity": "TENSORWISE" if per_tensor_weights
                                 else "CHANNELWISE", "dtype": "INT"},
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
        "skip_checks": False,
        "min_weight_elements": 0,
    }


def _rule(regex: str, operation: str, precision: Precision,
          per_tensor_weights: bool = False) -> dict[str, Any]:
    return {"regex": regex, "operation": operation, "algorithm_key": ALGORITHM,
            "op_config": _op_config(precision, per_tensor_weights)}


# TFLite Micro's CMSIS-NN FULLY_CONNECTED takes per-channel weights only with int8 inputs
# (kernels/cmsis_nn/fully_connected.cc): an int16x8 one needs per-tensor weights to run there.
CMSIS_NN_PER_TENSOR_INT16 = ("FULLY_CONNECTED",)


def op_regex(op: OpInfo) -> str:
    """A regex that matches exactly this op's scope (and no other op's)."""
    return f"^{re.escape(op.scope)}$"


def build_recipe(ops: list[OpInfo], precisions: Mapping[int, Precision],
                 default: Precision = Precision.INT8, cmsis_nn: bool = False) -> list[dict[str, Any]]:
    """A litert-quantizer recipe: int8 first (the fallback where int16 has no rule), then the
    default, then one exact rule per op that differs from the default. Last match wins.

    Args:
        ops: the float model's ops.
        precisions: op index -> precision; ops not listed take `default`.
        default: precision of unlisted ops and of the model I/O.
        cmsis_nn: int16 ops of CMSIS_NN_PER_TENSOR_INT16 get per-tensor weights.
    """
    recipe = [_rule(".*", "*", Precision.INT8)]
    if default is Precision.INT16:
        recipe.append(_rule("(?s).*", "*", Precision.INT16))
        if cmsis_nn:
            recipe += [_rule("(?s).*", kind, Precision.INT16, True)
                       for kind in CMSIS_NN_PER_TENSOR_INT16]
    for op in ops:
        precision = precisions.get(op.index, default)
        if precision is not default and quantizer_supports(op.op, precision):
            per_tensor = (cmsis_nn and precision is Precision.INT16
                          and op.op in CMSIS_NN_PER_TENSOR_INT16)
            recipe.append(_rule(op_regex(op), op.op, precision, per_tensor))
    return recipe


@functools.cache
def quantizer_supports(op_type: str, precision: Precision) -> bool:
    """Whether litert-quantizer accepts a rule for this op type and precision at all.

    It rejects a recipe naming an op it cannot quantise (e.g. NEG); such ops keep the
    fallback and `verify_precisions` reports what they became.
    """
    from litert_quantizer import recipe_manager

    try:
        recipe_manager.RecipeManager().load_quantization_recipe([_rule(".*", op_type, precision)])
    except ValueError:
        return False
    return True


def quantize_model(float_tflite: bytes, recipe: list[dict[str, Any]], stats: Statistics) -> bytes:
    """Apply `recipe` with edgeq's calibration statistics; returns the quantised flatbuffer with
    every buffer inline (litert-quantizer moves large ones outside, where TFLite Micro cannot
    read them: see edgeq.model.flatbuffer)."""
    from litert_quantizer import quantizer

    try:
        with captured_output("litert-quantizer"):
            q = quantizer.Quantizer(bytearray(float_tflite), copy.deepcopy(recipe))
            result = q.quantize(stats, enable_progress_bar=False, enable_progress_report=False)
    except Exception as e:
        raise ModelError(f"litert-quantizer failed: {' '.join(str(e).split())[:300]}") from e
    return inline_buffers(bytes(result.quantized_model))


@dataclass(frozen=True)
class OpOutcome:
    """What one float op became in the quantised model."""

    op: OpInfo  # the op as it appears in the quantised model
    float_op: OpInfo  # the same op in the float model (plans refer to these)
    requested: Precision | None  # None for ops that carry no float activations
    reason: str = ""  # why the precision differs from the request (empty when it matches)

    @property
    def integer(self) -> bool:
        return self.op.activation_dtype != "float32" and not (
            self.op.weight_dtype and "float32" in self.op.weight_dtype)

    def to_dict(self) -> dict[str, Any]:
        d = self.op.to_dict()
        d["float_index"] = self.float_op.index
        d["requested"] = self.requested.value if self.requested else None
        if self.reason:
            d["reason"] = self.reason
        return d


def verify_precisions(float_ops: list[OpInfo], quantized: bytes,
                      requested: Mapping[int, Precision],
                      default: Precision = Precision.INT8) -> list[OpOutcome]:
    """Match each float op to its quantised op (by output name) and explain every mismatch."""
    by_name = {op.name: op for op in graph_ops(quantized)}
    outcomes = []
    for fop in float_ops:
        qop = by_name.get(fop.name)
        if qop is None:
            raise ModelError(f"quantised model lost op {fop.op} '{fop.name}' (node {fop.index})")
        want = requested.get(fop.index, default) if fop.activation_dtype == "float32" else None
        outcomes.append(OpOutcome(qop, fop, want, _mismatch_reason(qop, want)))
    return outcomes


def _mismatch_reason(qop: OpInfo, want: Precision | None) -> str:
    got = qop.activation_dtype
    if want is None:
        return "" if got != "float32" else "float op with non-float inputs"
    if got == want.activation_dtype:
        return ""
    if got == "float32":
        return f"litert-quantizer has no {want.value} rule for {qop.op}; it stayed float"
    return (f"litert-quantizer has no {want.value} rule for {qop.op}; it became {got}")
