"""Equivalent topology: rewrite the float graph where the graph itself blocks precision, and prove
the rewrite changes nothing on float outputs.

- `neg`: NEG (no int8/int16 rule in litert-quantizer; LayerNorm's mean negation) -> MUL by -1.
- `squared-difference`: SQUARED_DIFFERENCE (no int16 rule; LayerNorm's variance) -> SUB, MUL.
- `matmul-fc`, `index-fixup`, `rsqrt`, `mask-magnitude`, `outlier-split`: the graphs
  transformers arrive as, and their outlier channels; opt-in `gelu-tanh` and `int32-ids` for
  TFLite Micro (see edgeq.model.transformer). `outlier-norm`: a LayerNorm reads its input's
  outlier channels scaled down (see edgeq.model.layernorm).
- `preprocessing`: elementwise ops with constants right after a graph input (a Keras
  Normalization layer over raw, wide-range features) move out of the model into a
  preprocessing contract (constants + formula) that travels with the model: the quantised model
  then takes normalised inputs, and one per-tensor input scale no longer has to span 1000x.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_agent.metrics import finite_db, sqnr_db
from device_agent.preprocessing import Contract
from device_agent.runtimes import LiteRTRuntime, TensorSpec, quantize
from edgeq.capture import captured_output
from edgeq.errors import InputError, ModelError
from edgeq.model.data import Dataset
from edgeq.model.editor import GraphEditor
from edgeq.model.flatbuffer import explain_node, pack_tree, read_tree, tensor_type_name
from edgeq.model.layernorm import STRENGTHS, scale_outlier_norms
from edgeq.model.load import FloatModel
from edgeq.model.transformer import (
    GELU_TANH_TOLERANCE,
    fuse_rsqrt,
    gelu_to_tanh,
    int64_inputs_to_int32,
    matmul_to_fully_connected,
    remove_index_fixups,
    shrink_masks,
    split_outliers,
)
from edgeq.progress import progress

log = logging.getLogger("edgeq")
REWRITES = ("neg", "squared-difference", "matmul-fc", "index-fixup", "rsqrt", "mask-magnitude",
            "outlier-split", "outlier-norm", "gelu-tanh", "int32-ids", "preprocessing")
# Equal in float (proved on the calibration data) and leave the model's inputs as they are: on
# unless --no-rewrite. `preprocessing` changes what the model takes (a contract travels with
# it), so it is only done when asked.
DEFAULT_REWRITES = ("neg", "squared-difference", "matmul-fc", "index-fixup", "rsqrt",
                    "mask-magnitude", "outlier-split", "outlier-norm")
# A rewrite is accepted when float outputs differ by at most this much (relative to their range);
# an approximation (opt-in) by its own stated tolerance.
EQUALITY_TOLERANCE = 1e-5
APPROXIMATIONS = {"gelu-tanh": GELU_TANH_TOLERANCE}
_OPT_OUT = "run with --no-rewrite, plus --rewrite NAME for each one you still want"
PROOF_SAMPLES = 64
TRIAL_SAMPLES = 32  # of them, what outlier-norm's strengths are judged on
_CONTRACT_OPS = {"SUB": "sub", "ADD": "add", "MUL": "mul", "DIV": "div"}


def chosen_rewrites(explicit: tuple[str, ...], no_defaults: bool = False) -> tuple[str, ...] | None:
    """What --rewrite/--no-rewrite ask for; None when neither was given (the defaults, or the
    rewrites a given plan was made with)."""
    if not explicit and not no_defaults:
        return None
    return (() if no_defaults else DEFAULT_REWRITES) + tuple(explicit)


def parse_rewrites(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`all` or names from REWRITES (comma-separated or repeated) -> a checked tuple."""
    flat = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if "all" in flat:
        return REWRITES
    unknown = [n for n in flat if n not in REWRITES]
    if unknown:
        raise InputError(f"unknown rewrite '{unknown[0]}'; expected all or {', '.join(REWRITES)}")
    return tuple(n for n in REWRITES if n in flat)


@dataclass
class Rewritten:
    """The rewritten float model, what was done and why, and the preprocessing contract."""

    model: FloatModel
    applied: list[dict[str, Any]] = field(default_factory=list)
    contracts: list[Contract] = field(default_factory=list)
    max_abs_diff: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        """The rewrites that changed the graph, in canonical order."""
        done = {a["rewrite"] for a in self.applied}
        return tuple(n for n in REWRITES if n in done)

    def dataset(self, data: Dataset | None) -> Dataset | None:
        """Data for the rewritten model: the contracts applied to their inputs (None: None)."""
        return None if data is None else self.dataset_for(data)

    def dataset_for(self, data: Dataset) -> Dataset:
        """`data` with each preprocessing contract applied to its input, each input in the
        rewritten model's type (int32-ids; a float model's specs are never quantised)."""
        by_name = {c.input: c for c in self.contracts}
        inputs = tuple(quantize(by_name[s.name].apply(x) if s.name in by_name else x, s)
                       for s, x in zip(self.model.inputs, data.inputs))
        return Dataset(inputs, data.y, data.source)

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "preprocessing": [c.to_dict() for c in self.contracts],
                "float_max_abs_diff": self.max_abs_diff}


def rewrite(model: FloatModel, names: tuple[str, ...], proof_data: Dataset,
            quiet: bool = False) -> Rewritten:
    """Apply the named rewrites and prove float equality on `proof_data`; raises ModelError if
    the rewritten model's float outputs differ. `quiet`: a probe, say nothing."""
    if not names:
        return Rewritten(model)
    from ai_edge_litert import schema_py_generated as schema

    tree = read_tree(model.tflite)
    graph = GraphEditor(tree, schema)
    applied: list[dict[str, Any]] = []
    contracts: list[Contract] = []
    proof = proof_data.head(PROOF_SAMPLES)
    if "mask-magnitude" in names:  # first: its trials compare with the untouched model
        before = _run_float(model.tflite, proof)
        shrink_masks(graph, applied, lambda tflite: _max_diff(before, _run_float(tflite, proof))[1])
    for name, step in _GRAPH_REWRITES:
        if name in names:
            step(graph, applied)
    if "outlier-split" in names:  # after matmul-fc: it works on FULLY_CONNECTED
        split_outliers(graph, applied,
                       lambda tensors: channel_peaks(pack_tree(graph.tree), tensors, proof))
    if "outlier-norm" in names:  # after outlier-split: it scales the outliers that one places
        graph = strongest_outlier_norm(graph, applied, proof, show_progress=not quiet)
        tree = graph.tree
    if "preprocessing" in names:
        contracts = extract_preprocessing(graph, model, applied)
    graph.prune()
    if not applied:
        asked = quiet or set(names) <= set(DEFAULT_REWRITES)
        (log.debug if asked else log.warning)("rewrites %s: nothing in this model to rewrite",
                                              ", ".join(names))
        return Rewritten(model)
    inputs, outputs = _retyped(model.inputs, graph, graph.sg.inputs), \
        _retyped(model.outputs, graph, graph.sg.outputs)
    result = Rewritten(FloatModel(pack_tree(tree), model.source, model.kind, inputs, outputs),
                       applied, contracts)
    result.max_abs_diff = _prove_equal(model.tflite, result, proof)
    for a in applied if not quiet else ():
        log.info("rewrite %s: %s", a["rewrite"], a["why"])
    return result


def strongest_outlier_norm(graph: GraphEditor, applied: list[dict[str, Any]], proof: Dataset,
                           show_progress: bool = False) -> GraphEditor:
    """`outlier-norm` at each of STRENGTHS on a copy of the graph; the copy whose simulated int8
    model (edgeq.quant.simulate, calibrated and run on the first TRIAL_SAMPLES of `proof`) has
    the best output SQNR wins, and its entry in `applied` lists every strength's figure. The
    graph as it was when the model has no residual stream to scale."""
    from edgeq.quant.calibrate import calibrate
    from edgeq.quant.simulate import simulated_int8

    base = pack_tree(graph.tree)
    trial = _as_graph_takes(base, proof.head(TRIAL_SAMPLES))  # int32-ids may have run
    reference = _run_float(base, trial)
    measured: dict[int, np.ndarray] = {}

    def peaks(tensors: list[int]) -> dict[int, np.ndarray]:  # the same tensors in every copy
        missing = [t for t in tensors if t not in measured]
        measured.update(channel_peaks(base, missing, proof) if missing else {})
        return {t: measured[t] for t in tensors}

    trials = []
    for strength in progress(STRENGTHS, "outlier-norm strengths", show_progress):
        copy = GraphEditor(read_tree(base), graph.schema)
        done: list[dict[str, Any]] = []
        scale_outlier_norms(copy, done, peaks, strength)
        if not done:
            return graph
        tflite = pack_tree(copy.tree)
        stats = calibrate(tflite, trial, show_progress=False)
        simulated = _run_float(simulated_int8(tflite, stats), trial, xnnpack=False)
        trials.append((min(finite_db(sqnr_db(r, q)) for r, q in zip(reference, simulated)),
                       strength, copy, done))
    best = max(trials, key=lambda t: t[0])
    figures = ", ".join(f"{strength:g}: {db:.2f} dB" for db, strength, _, _ in trials)
    for entry in best[3]:
        entry["why"] += (f"; strength {best[1]:g} (the most any channel is scaled down) chosen by "
                         f"simulated int8 output SQNR on the calibration data ({figures})")
    applied += best[3]
    return best[2]


def _as_graph_takes(tflite: bytes, data: Dataset) -> Dataset:
    """`data` cast to the model's input types."""
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        specs = rt.inputs()
    return Dataset(tuple(quantize(x, s) for x, s in zip(data.inputs, specs)), data.y, data.source)


def _retyped(specs: tuple[TensorSpec, ...], graph: GraphEditor,
             indices: Any) -> tuple[TensorSpec, ...]:
    """The specs with each tensor's dtype as the rewritten graph has it."""
    return tuple(dataclasses.replace(s, dtype=tensor_type_name(graph.sg.tensors[int(i)].type))
                 for s, i in zip(specs, indices))


def _prove_equal(original: bytes, rewritten: Rewritten, data: Dataset) -> float:
    before = _run_float(original, data)
    names = ", ".join(sorted({a["rewrite"] for a in rewritten.applied}))
    try:
        after = _run_float(rewritten.model.tflite, rewritten.dataset_for(data))
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"rewrites ({names}) make the float model fail on the calibration "
                         f"data: {explain_node(rewritten.model.tflite, str(e))}; {_OPT_OUT}") from e
    tolerance = max([EQUALITY_TOLERANCE] + [APPROXIMATIONS[a["rewrite"]] for a in rewritten.applied
                                            if a["rewrite"] in APPROXIMATIONS])
    worst, equal = _max_diff(before, after, tolerance)
    if not equal:
        raise ModelError(f"rewrites ({names}) changed the float outputs on the calibration data "
                         f"(max |diff| {worst:.3g}); {_OPT_OUT}")
    return worst


def _max_diff(before: list[np.ndarray], after: list[np.ndarray],
              tolerance: float = EQUALITY_TOLERANCE) -> tuple[float, bool]:
    """Largest |difference| over all outputs, and whether each is within `tolerance` of its
    output's range."""
    worst, equal = 0.0, True
    for a, b in zip(before, after):
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1.0)
        worst = max(worst, diff)
        equal = equal and diff <= tolerance * scale
    return worst, equal


def channel_peaks(tflite: bytes, tensors: list[int], data: Dataset) -> dict[int, np.ndarray]:
    """Per last-axis channel, the max |value| each tensor takes over `data` (float model)."""
    peaks: dict[int, np.ndarray] = {}
    try:
        with captured_output("LiteRT"):
            rt = LiteRTRuntime(tflite, preserve_all_tensors=True)
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"the rewritten float model does not run: {explain_node(tflite, str(e))}"
                         f"; {_OPT_OUT}") from e
    with rt:
        for k in range(len(data)):
            rt.infer(_feed(rt, data, k))
            for t in tensors:
                value = np.abs(rt.interpreter.get_tensor(t))
                channel_max = value.reshape(-1, value.shape[-1]).max(axis=0)
                peaks[t] = np.maximum(peaks.get(t, channel_max), channel_max)
    return peaks


def _feed(rt: LiteRTRuntime, data: Dataset, k: int) -> list[np.ndarray]:
    """Sample k, integer inputs in the types this (possibly rewritten) model takes."""
    return [quantize(x, spec) for x, spec in zip(data.sample(k), rt.inputs())]


def _run_float(tflite: bytes, data: Dataset, xnnpack: bool = True) -> list[np.ndarray]:
    """The float model's outputs on `data`; on LiteRT's XNNPACK delegate unless asked not to
    (the simulated int8 model: its QUANTIZE/DEQUANTIZE pairs run on the builtin kernels)."""
    with captured_output("LiteRT"):
        rt = LiteRTRuntime(tflite, num_threads=(os.cpu_count() or 1) if xnnpack else 1,
                           use_xnnpack=xnnpack)
    with rt:
        runs = [rt.infer(_feed(rt, data, k)) for k in range(len(data))]
    return [np.concatenate([r[i] for r in runs]).astype(np.float64) for i in range(len(runs[0]))]


def float16_weights_to_float32(tflite: bytes) -> tuple[bytes, int]:
    """A float16 .tflite (weights stored as float16, DEQUANTIZE ops to float32) as the float32
    model it stands for: each such DEQUANTIZE becomes a float32 constant. Returns the model and
    how many constants were converted (0: unchanged)."""
    from ai_edge_litert import schema_py_generated as schema

    tree = read_tree(tflite)
    graph = GraphEditor(tree, schema)
    converted = graph.fold_float16_dequantize()
    if not converted:
        return tflite, 0
    graph.prune()
    return pack_tree(tree), converted


def replace_neg(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    for k, op in enumerate(g.sg.operators):
        if g.op_type(op) == "NEG":
            out = int(op.outputs[0])
            minus_one = g.add_tensor(out, f"{g.tensor_name(out)}/edgeq_minus_one",
                                        np.array([-1.0], np.float32))
            g.sg.operators[k] = g.binary_op("MUL", [int(op.inputs[0]), minus_one], out)
            applied.append({"rewrite": "neg", "op": g.tensor_name(out),
                            "why": "NEG has no int8/int16 rule in litert-quantizer: MUL(x, -1)"})


def replace_squared_difference(g: GraphEditor, applied: list[dict[str, Any]]) -> None:
    ops = []
    for op in g.sg.operators:
        if g.op_type(op) != "SQUARED_DIFFERENCE":
            ops.append(op)
            continue
        out = int(op.outputs[0])
        diff = g.add_tensor(out, f"{g.tensor_name(out)}/edgeq_diff")
        ops.append(g.binary_op("SUB", [int(i) for i in op.inputs], diff))
        ops.append(g.binary_op("MUL", [diff, diff], out))
        applied.append({"rewrite": "squared-difference", "op": g.tensor_name(out),
                        "why": "SQUARED_DIFFERENCE has no int16 rule: SUB then MUL(d, d), "
                               "both with int16 kernels"})
    g.sg.operators = ops


def extract_preprocessing(g: GraphEditor, model: FloatModel, applied: list[dict[str, Any]]) -> list[Contract]:
    contracts = []
    for slot, spec in zip(range(len(g.sg.inputs)), model.inputs):
        start = int(g.sg.inputs[slot])
        steps, last, absorbed = [], start, []
        while True:
            consumers = g.readers(last)
            step = _affine_step(g, consumers, last)
            if step is None:
                break
            steps.append(step)
            absorbed.append(consumers[0])
            last = int(consumers[0].outputs[0])
        if not steps:
            continue
        g.sg.operators = [op for op in g.sg.operators if op not in absorbed]
        g.sg.inputs[slot] = last
        for sig in g.tree.signatureDefs or []:
            for io in sig.inputs or []:
                if io.tensorIndex == start:
                    io.tensorIndex = last
        contract = Contract(spec.name, tuple(steps))
        contracts.append(contract)
        applied.append({"rewrite": "preprocessing", "op": g.tensor_name(last),
                        "why": f"{len(steps)} elementwise ops on raw input '{spec.name}' moved "
                               f"out of the model: {contract.formula()} (constants in the "
                               "preprocessing contract)"})
    return contracts


def _affine_step(g: GraphEditor, consumers: list[Any], tensor: int) -> tuple[str, np.ndarray] | None:
    """(op, constant) if the tensor's only consumer is x (op) constant, shape-preserving."""
    if len(consumers) != 1 or len(consumers[0].outputs) != 1:
        return None
    op = consumers[0]
    kind = _CONTRACT_OPS.get(g.op_type(op))
    ins = [int(i) for i in op.inputs]
    if kind is None or len(ins) != 2 or ins[0] != tensor:
        return None
    if getattr(op.builtinOptions, "fusedActivationFunction", 0):
        return None
    value = g.constant(ins[1])
    out_shape = g.sg.tensors[int(op.outputs[0])].shape
    if value is None or list(out_shape) != list(g.sg.tensors[tensor].shape):
        return None
    return kind, value.copy()


_GRAPH_REWRITES: tuple[tuple[str, Callable[[GraphEditor, list[dict[str, Any]]], None]], ...] = (
    ("neg", replace_neg), ("squared-difference", replace_squared_difference),
    ("matmul-fc", matmul_to_fully_connected), ("index-fixup", remove_index_fixups),
    ("rsqrt", fuse_rsqrt), ("gelu-tanh", gelu_to_tanh), ("int32-ids", int64_inputs_to_int32))
