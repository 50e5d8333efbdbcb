"""Equivalent topology: rewrite the float graph where the graph itself blocks precision, and prove
the rewrite changes nothing on float outputs.

- `neg`: NEG (no int8/int16 rule in litert-quantizer; LayerNorm's mean negation) -> MUL by -1.
- `squared-difference`: SQUARED_DIFFERENCE (no int16 rule; LayerNorm's variance) -> SUB, MUL.
- `preprocessing`: elementwise ops with constants right after a graph input (a Keras
  Normalization layer over raw, wide-range features) move out of the model into a
  preprocessing contract (constants + formula) that travels with the model: the quantised model
  then takes normalised inputs, and one per-tensor input scale no longer has to span 1000x.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.preprocessing import Contract
from device_agent.runtimes import LiteRTRuntime
from edgeq.capture import captured_output
from edgeq.errors import InputError, ModelError
from edgeq.model.data import Dataset, labels_for, load_dataset
from edgeq.model.flatbuffer import op_type, pack_tree, read_tree
from edgeq.model.load import FloatModel, load_model

log = logging.getLogger("edgeq")
REWRITES = ("neg", "squared-difference", "preprocessing")
# Exact in float and leave the model's inputs as they are: on unless --no-rewrite. `preprocessing`
# changes what the model takes (a contract travels with it), so it is only done when asked.
DEFAULT_REWRITES = ("neg", "squared-difference")
# A rewrite is accepted when float outputs differ by at most this much (relative to their range).
EQUALITY_TOLERANCE = 1e-5
PROOF_SAMPLES = 64
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
        """`data` with each preprocessing contract applied to its input."""
        if not self.contracts:
            return data
        by_name = {c.input: c for c in self.contracts}
        inputs = tuple(by_name[s.name].apply(x) if s.name in by_name else x
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
    graph = _Graph(tree, schema)
    applied: list[dict[str, Any]] = []
    contracts: list[Contract] = []
    if "preprocessing" in names:
        contracts = graph.extract_preprocessing(model, applied)
    if "neg" in names:
        graph.replace_neg(applied)
    if "squared-difference" in names:
        graph.replace_squared_difference(applied)
    graph.prune()
    if not applied:
        asked = quiet or set(names) <= set(DEFAULT_REWRITES)
        (log.debug if asked else log.warning)("rewrites %s: nothing in this model to rewrite",
                                              ", ".join(names))
        return Rewritten(model)
    result = Rewritten(FloatModel(pack_tree(tree), model.source, model.kind, model.inputs,
                                  model.outputs), applied, contracts)
    result.max_abs_diff = _prove_equal(model.tflite, result, proof_data.head(PROOF_SAMPLES))
    for a in applied if not quiet else ():
        log.info("rewrite %s: %s", a["rewrite"], a["why"])
    return result


def _prove_equal(original: bytes, rewritten: Rewritten, data: Dataset) -> float:
    before = _run_float(original, data)
    after = _run_float(rewritten.model.tflite, rewritten.dataset_for(data))
    worst = 0.0
    for a, b in zip(before, after):
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1.0)
        worst = max(worst, diff)
        if diff > EQUALITY_TOLERANCE * scale:
            raise ModelError(f"rewrite changed the float outputs (max |diff| {diff:.3g}); "
                             "not applied — run without --rewrite")
    return worst


def _run_float(tflite: bytes, data: Dataset) -> list[np.ndarray]:
    with captured_output("LiteRT"):
        rt = LiteRTRuntime(tflite)
    with rt:
        runs = [rt.infer(data.sample(k)) for k in range(len(data))]
    return [np.concatenate([r[i] for r in runs]).astype(np.float64) for i in range(len(runs[0]))]


def float16_weights_to_float32(tflite: bytes) -> tuple[bytes, int]:
    """A float16 .tflite (weights stored as float16, DEQUANTIZE ops to float32) as the float32
    model it stands for: each such DEQUANTIZE becomes a float32 constant. Returns the model and
    how many constants were converted (0: unchanged)."""
    from ai_edge_litert import schema_py_generated as schema

    tree = read_tree(tflite)
    graph = _Graph(tree, schema)
    converted = graph.fold_float16_dequantize()
    if not converted:
        return tflite, 0
    graph.prune()
    return pack_tree(tree), converted


class _Graph:
    """Edits subgraph 0 of a TFLite object tree (ai_edge_litert.schema_py_generated)."""

    def __init__(self, tree: Any, schema: Any) -> None:
        self.tree, self.schema = tree, schema
        self.sg = tree.subgraphs[0]

    def op_type(self, op: Any) -> str:
        return op_type(self.tree, op)

    def tensor_name(self, index: int) -> str:
        name = self.sg.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def constant(self, index: int) -> np.ndarray | None:
        """The float32 value of a constant tensor, or None if it is not a float constant."""
        t = self.sg.tensors[index]
        buf = self.tree.buffers[t.buffer] if t.buffer < len(self.tree.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0 or t.type != self.schema.TensorType.FLOAT32:
            return None
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        return np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.float32).reshape(shape)

    def opcode(self, name: str) -> int:
        code = getattr(self.schema.BuiltinOperator, name)
        for k, oc in enumerate(self.tree.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
                return k
        oc = self.schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        self.tree.operatorCodes.append(oc)
        return len(self.tree.operatorCodes) - 1

    def add_tensor(self, like: int, name: str, value: np.ndarray | None = None) -> int:
        """A new float32 tensor shaped like tensor `like` (or a constant holding `value`)."""
        t = self.schema.TensorT()
        t.name, t.type = name, self.schema.TensorType.FLOAT32
        if value is None:
            src = self.sg.tensors[like]
            t.shape = None if src.shape is None else list(src.shape)
            t.shapeSignature = None if src.shapeSignature is None else list(src.shapeSignature)
            t.buffer = 0
        else:
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(value.astype(np.float32).tobytes(), np.uint8)
            self.tree.buffers.append(buf)
            t.shape, t.buffer = list(value.shape), len(self.tree.buffers) - 1
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def binary_op(self, name: str, inputs: list[int], output: int) -> Any:
        op = self.schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(name), inputs, [output]
        options = {"MUL": ("MulOptions", "MulOptionsT"), "SUB": ("SubOptions", "SubOptionsT")}[name]
        op.builtinOptionsType = getattr(self.schema.BuiltinOptions, options[0])
        op.builtinOptions = getattr(self.schema, options[1])()
        return op

    def prune(self) -> None:
        """Drop tensors no op, input or output uses any more (the raw input after a
        preprocessing move, its constants) and buffers no tensor or metadata uses."""
        sg, tree = self.sg, self.tree
        used = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for op in sg.operators:
            used |= {int(i) for i in op.inputs if i >= 0} | {int(i) for i in op.outputs}
            used |= {int(i) for i in (op.intermediates if op.intermediates is not None else ())}
        remap = {old: new for new, old in enumerate(sorted(used))}

        def moved(indices: Any) -> list[int]:
            return [remap[int(i)] if i >= 0 else -1 for i in indices]

        sg.tensors = [sg.tensors[i] for i in sorted(used)]
        for op in sg.operators:
            op.inputs, op.outputs = moved(op.inputs), moved(op.outputs)
            if op.intermediates is not None:
                op.intermediates = moved(op.intermediates)
        sg.inputs, sg.outputs = moved(sg.inputs), moved(sg.outputs)
        for sig in tree.signatureDefs or []:
            if sig.subgraphIndex == 0:
                for io in list(sig.inputs or []) + list(sig.outputs or []):
                    io.tensorIndex = remap[io.tensorIndex]
        owners = [t for g in tree.subgraphs for t in g.tensors] + list(tree.metadata or [])
        kept = sorted({0} | {o.buffer for o in owners})
        bmap = {old: new for new, old in enumerate(kept)}
        tree.buffers = [tree.buffers[i] for i in kept]
        for o in owners:
            o.buffer = bmap[o.buffer]

    def fold_float16_dequantize(self) -> int:
        """DEQUANTIZE(float16 constant) -> a float32 constant holding the same values."""
        kept, folded = [], 0
        for op in self.sg.operators:
            source = int(op.inputs[0]) if self.op_type(op) == "DEQUANTIZE" else -1
            tensor = self.sg.tensors[source] if source >= 0 else None
            data = self.tree.buffers[tensor.buffer].data if tensor is not None else None
            if tensor is None or tensor.type != self.schema.TensorType.FLOAT16 or data is None \
                    or len(data) == 0:
                kept.append(op)
                continue
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float16)
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
            self.tree.buffers.append(buf)
            self.sg.tensors[int(op.outputs[0])].buffer = len(self.tree.buffers) - 1
            folded += 1
        self.sg.operators = kept
        return folded

    def replace_neg(self, applied: list[dict[str, Any]]) -> None:
        for k, op in enumerate(self.sg.operators):
            if self.op_type(op) == "NEG":
                out = int(op.outputs[0])
                minus_one = self.add_tensor(out, f"{self.tensor_name(out)}/edgeq_minus_one",
                                            np.array([-1.0], np.float32))
                self.sg.operators[k] = self.binary_op("MUL", [int(op.inputs[0]), minus_one], out)
                applied.append({"rewrite": "neg", "op": self.tensor_name(out),
                                "why": "NEG has no int8/int16 rule in litert-quantizer: MUL(x, -1)"})

    def replace_squared_difference(self, applied: list[dict[str, Any]]) -> None:
        ops = []
        for op in self.sg.operators:
            if self.op_type(op) != "SQUARED_DIFFERENCE":
                ops.append(op)
                continue
            out = int(op.outputs[0])
            diff = self.add_tensor(out, f"{self.tensor_name(out)}/edgeq_diff")
            ops.append(self.binary_op("SUB", [int(i) for i in op.inputs], diff))
            ops.append(self.binary_op("MUL", [diff, diff], out))
            applied.append({"rewrite": "squared-difference", "op": self.tensor_name(out),
                            "why": "SQUARED_DIFFERENCE has no int16 rule: SUB then MUL(d, d), "
                                   "both with int16 kernels"})
        self.sg.operators = ops

    def extract_preprocessing(self, model: FloatModel, applied: list[dict[str, Any]]) -> list[Contract]:
        contracts = []
        for slot, spec in zip(range(len(self.sg.inputs)), model.inputs):
            start = int(self.sg.inputs[slot])
            steps, last, absorbed = [], start, []
            while True:
                consumers = [op for op in self.sg.operators if last in [int(i) for i in op.inputs]]
                step = self._affine_step(consumers, last)
                if step is None:
                    break
                steps.append(step)
                absorbed.append(consumers[0])
                last = int(consumers[0].outputs[0])
            if not steps:
                continue
            self.sg.operators = [op for op in self.sg.operators if op not in absorbed]
            self.sg.inputs[slot] = last
            for sig in self.tree.signatureDefs or []:
                for io in sig.inputs or []:
                    if io.tensorIndex == start:
                        io.tensorIndex = last
            contract = Contract(spec.name, tuple(steps))
            contracts.append(contract)
            applied.append({"rewrite": "preprocessing", "op": self.tensor_name(last),
                            "why": f"{len(steps)} elementwise ops on raw input '{spec.name}' moved "
                                   f"out of the model: {contract.formula()} (constants in the "
                                   "preprocessing contract)"})
        return contracts

    def _affine_step(self, consumers: list[Any], tensor: int) -> tuple[str, np.ndarray] | None:
        """(op, constant) if the tensor's only consumer is x (op) constant, shape-preserving."""
        if len(consumers) != 1 or len(consumers[0].outputs) != 1:
            return None
        op = consumers[0]
        kind = _CONTRACT_OPS.get(self.op_type(op))
        ins = [int(i) for i in op.inputs]
        if kind is None or len(ins) != 2 or ins[0] != tensor:
            return None
        if getattr(op.builtinOptions, "fusedActivationFunction", 0):
            return None
        value = self.constant(ins[1])
        out_shape = self.sg.tensors[int(op.outputs[0])].shape
        if value is None or list(out_shape) != list(self.sg.tensors[tensor].shape):
            return None
        return kind, value.copy()


@dataclass
class Inputs:
    """A loaded (and possibly rewritten) model with its calibration and eval data."""

    model: FloatModel
    calib: Dataset
    eval: Dataset | None
    rewritten: Rewritten


def load_inputs(model_path: Path, calib_path: Path, eval_path: Path | None,
                rewrites: tuple[str, ...] | None = None) -> Inputs:
    """Load MODEL and its data, apply `rewrites` (None: DEFAULT_REWRITES; each proved equal on
    the calibration data) and put the data through any preprocessing contract."""
    original = load_model(model_path)
    calib = load_dataset(calib_path, original.inputs)
    evald = load_dataset(eval_path, original.inputs, labels=True) if eval_path else None
    if evald is not None and original.outputs:
        evald = labels_for(evald, original.outputs[0])
    done = rewrite(original, parse_rewrites(DEFAULT_REWRITES if rewrites is None else rewrites), calib)
    return Inputs(done.model, done.dataset_for(calib), done.dataset(evald), done)


def write_contract(directory: Path, contracts: list[dict[str, Any]]) -> None:
    """DIR/preprocessing.json when preprocessing was moved out of the model."""
    if contracts:
        (directory / "preprocessing.json").write_text(
            json.dumps({"format": "edgeq-preprocessing", "schema_version": 1,
                        "inputs": contracts}, indent=2) + "\n")


def read_contracts(model: Path, explicit: Path | None = None) -> list[dict[str, Any]]:
    """The preprocessing contracts that travel with a quantised model: `explicit`, else
    preprocessing.json beside it; [] when it has none."""
    path = explicit or Path(model).parent / "preprocessing.json"
    if not path.is_file():
        if explicit:
            raise InputError(f"preprocessing contract not found: {path}")
        return []
    try:
        contracts = json.loads(path.read_text())["inputs"]
        for c in contracts:
            Contract.from_dict(c)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not an edgeq preprocessing contract ({e})") from e
    return contracts
