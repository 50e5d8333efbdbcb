"""A quantisation session: one float model, one calibration, any number of precision plans.

`convert` uses it once; the search reuses it for every candidate plan (calibrate ONCE).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from edgeq.model.data import Dataset
from edgeq.model.graph import OpInfo, read_ops, requantize_ops
from edgeq.model.load import FloatModel
from edgeq.quant.calibrate import MINMAX, CalibrationMethod, Statistics, calibrate
from edgeq.quant.kernels import InvokeCheck, KernelCache, invoke_check
from edgeq.quant.quantize import OpOutcome, Precision, build_recipe, quantize_model, verify_precisions

log = logging.getLogger("edgeq")


@dataclass
class Quantized:
    """A quantised model and proof of what each op became."""

    tflite: bytes
    recipe: list[dict[str, Any]]
    outcomes: list[OpOutcome]

    def int16_ops(self) -> list[OpOutcome]:
        return [o for o in self.outcomes if o.op.activation_dtype == "int16"]

    @functools.cached_property
    def requantize_ops(self) -> int:
        """QUANTIZE ops inside the graph: the int8 <-> int16 boundaries a mixed plan pays for."""
        return requantize_ops(read_ops(self.tflite))


class QuantSession:
    """Calibrates once, then quantises the float model with any per-op precision map."""

    def __init__(self, model: FloatModel, calib: Dataset,
                 method: CalibrationMethod = MINMAX, show_progress: bool = True,
                 kernels: KernelCache | None = None, quiet: bool = False,
                 cmsis_nn: bool = False) -> None:
        self.model = model
        self.cmsis_nn = cmsis_nn  # int16 FULLY_CONNECTED with per-tensor weights (see quantize)
        self.calib = calib
        self.method = method
        self.ops: list[OpInfo] = read_ops(model.tflite)
        start = time.perf_counter()
        self.calibration_notes: list[str] = []
        self.stats: Statistics = calibrate(model.tflite, calib, method, show_progress,
                                           self.calibration_notes)
        for note in self.calibration_notes[:0 if quiet else 5]:
            log.warning(note)
        if len(self.calibration_notes) > 5 and not quiet:
            log.warning("calibration: %d more tensors changed (report.json lists them)",
                        len(self.calibration_notes) - 5)
        self.calibration_s = time.perf_counter() - start
        self.kernels = kernels or KernelCache()
        self._baseline: InvokeCheck | None = None

    @property
    def float_ops(self) -> list[OpInfo]:
        """Ops with float activations: the ones a plan can choose a precision for."""
        return [op for op in self.ops if op.activation_dtype == "float32"]

    def quantize(self, int16: set[int], default: Precision = Precision.INT8) -> Quantized:
        """Quantise with `int16` op indices in int16 (or all but int8-demoted ones when the
        default is int16); verify every op's precision."""
        precisions = self.precisions(int16, default)
        recipe = build_recipe(self.ops, precisions, default, self.cmsis_nn)
        tflite = quantize_model(self.model.tflite, recipe, self.stats)
        outcomes = verify_precisions(self.ops, tflite, precisions, default)
        return Quantized(tflite, recipe, outcomes)

    def precisions(self, int16: set[int], default: Precision) -> dict[int, Precision]:
        if default is Precision.INT16:
            return {op.index: Precision.INT16 if op.index in int16 else Precision.INT8
                    for op in self.float_ops}
        return {i: Precision.INT16 for i in int16}

    def supported_int16(self, wanted: set[int], quiet: bool = False) -> tuple[set[int], list[str]]:
        """Drop ops whose int16 kernel is missing in LiteRT or TFLM (learnt by invoking).

        Returns the op indices that may be int16 and one warning per demoted op (logged unless
        `quiet`).
        """
        by_index = {op.index: op for op in self.ops}
        bad = {i for i in wanted if self.kernels.get(by_index[i].op) is False}
        unknown = {by_index[i].op for i in wanted - bad if self.kernels.get(by_index[i].op) is None}
        if unknown:
            bad |= self._probe(wanted - bad, unknown)
        warnings = [f"{by_index[i].op} '{by_index[i].name}' (node {i}) kept int8: no int16 kernel "
                    f"({self.kernels.why(by_index[i].op)})" for i in sorted(bad)]
        for w in warnings if not quiet else ():
            log.warning(w)
        return wanted - bad, warnings

    def _probe(self, wanted: set[int], unknown_types: set[str]) -> set[int]:
        """Try the whole plan first; only if it fails, test each unknown op type alone."""
        by_index = {op.index: op for op in self.ops}
        sample = self.calib.sample(0)
        whole = self.quantize(wanted)
        check = invoke_check(whole.tflite, sample)
        if check.ok:
            for o in whole.int16_ops():
                if o.op.op in unknown_types:
                    self.kernels.record(o.op.op, True)
            return set()
        baseline = self._int8_baseline(sample)
        bad_types = set()
        for op_type in sorted(unknown_types):
            alone = self.quantize({i for i in wanted if by_index[i].op == op_type})
            if not any(o.op.op == op_type for o in alone.int16_ops()):
                continue  # the quantizer kept it int8 anyway; verify_precisions reports that
            result = invoke_check(alone.tflite, sample)
            failed = _new_failure(result, baseline)
            if failed:
                self.kernels.record(op_type, False, failed)
                bad_types.add(op_type)
            elif result.ok:
                self.kernels.record(op_type, True)
            else:  # fails exactly where all-int8 fails too: no proof either way, not cached
                log.info("cannot prove the int16 kernel of %s: the int8 model fails too (%s)",
                         op_type, baseline.message)
        return {i for i in wanted if by_index[i].op in bad_types}

    def _int8_baseline(self, sample: list) -> InvokeCheck:
        if self._baseline is None:
            self._baseline = invoke_check(self.quantize(set()).tflite, sample)
        return self._baseline


def _new_failure(result: InvokeCheck, baseline: InvokeCheck) -> str:
    """The failure of `result` that the all-int8 model does not have, or ''."""
    parts = []
    if result.litert_error and not baseline.litert_error:
        parts.append(f"LiteRT: {result.litert_error}")
    if result.tflm_error and not baseline.tflm_error:
        parts.append(f"TFLM: {result.tflm_error}")
    return "; ".join(parts)


def resolve_precisions(session: QuantSession, mode: str, int16: set[int]) -> tuple[set[int], Precision]:
    """Mode + requested ops -> (int16 op indices, default precision)."""
    if mode == "int16x8":
        return {op.index for op in session.float_ops}, Precision.INT16
    if mode == "int8":
        return set(), Precision.INT8
    return set(int16), Precision.INT8

