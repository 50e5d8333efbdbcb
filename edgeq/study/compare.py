"""Run one quantised model in several runtimes and find the first op where they part.

Runtimes: `litert` (LiteRT as users run it, with XNNPACK; outputs only), `litert-builtin`
(LiteRT's builtin kernels, what edgeq evaluates with), `litert-ref` (LiteRT's reference
kernels) and `tflm` (TensorFlow Lite Micro, in a child process). The first runtime is the
reference. Outputs are compared in LSB; where two runtimes can keep every intermediate tensor,
every op's outputs are compared in execution order and the first op beyond tolerance is named
with its attributes, dtypes, scales, how far its inputs already differed, and what explains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from device_agent.metrics import cosine, finite_db, sqnr_db, task_metric
from device_agent.runtimes import LiteRTRuntime, TensorSpec, default_tflm_arena, dequantize
from device_agent.tflm_child import run_tflm
from edgeq.capture import captured_output
from edgeq.errors import InputError
from edgeq.model.flatbuffer import external_buffers, op_type, read_tree, tensor_type_name, text

RUNTIMES = ("litert", "litert-builtin", "litert-ref", "tflm")
DEFAULT_RUNTIMES = ("litert-builtin", "litert", "litert-ref", "tflm")
PER_OP = frozenset({"litert-builtin", "litert-ref", "tflm"})
# Largest difference accepted between two runtimes, in LSB of the tensor's dtype. Measured on the
# bundled models: 0-1 LSB for int8 CNN/MLPs, 2 LSB for the int8 attention block, 15 of 65536 for
# int16 attention (softmax/exp/rsqrt are computed differently by the interpreters).
TOLERANCE_LSB = {"int8": 2, "uint8": 2, "int16": 32}
FLOAT_TOLERANCE = 1e-4  # float tensors: max |diff| relative to the reference's max |value|
# An op "parts" from the reference only when more than this share of its output elements is
# beyond tolerance: a deep CNN's per-op rounding (measured on MobileNetV2 0.35: 97.9% exact, 1.8%
# at 1 LSB, a few elements at 5) drifts the output by a few LSB without any op computing
# differently; missing weights put half the elements 16-127 LSB off.
PART_SHARE = 0.01
_HISTOGRAM = ((0, 0), (1, 1), (2, 3), (4, 15), (16, 127), (128, None))
_ENUMS = {"fusedActivationFunction": ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT"),
          "padding": ("SAME", "VALID")}


def stack_samples(samples: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per-sample raw inputs -> one array per model input, samples first (what
    compare_runtimes takes)."""
    return [np.stack([s[i] for s in samples]) for i in range(len(samples[0]))] if samples else []


def short_name(name: str) -> str:
    """A fused tensor name ("a/Relu6;a/BN/add_1;...") shortened to its first part."""
    first = name.split(";", maxsplit=1)[0]
    return first + (";..." if first != name else "")


def parse_runtimes(names: str | Sequence[str]) -> tuple[str, ...]:
    """'litert,tflm' -> ('litert', 'tflm'); unknown names are an InputError listing the known."""
    items = names.split(",") if isinstance(names, str) else list(names)
    flat = tuple(n.strip() for n in items if n.strip())
    unknown = [n for n in flat if n not in RUNTIMES]
    if unknown or len(flat) < 2:
        raise InputError(f"--runtimes '{','.join(flat)}': expected at least two of "
                         f"{', '.join(RUNTIMES)}" + (f" ('{unknown[0]}' is not one)" if unknown else ""))
    return tuple(dict.fromkeys(flat))


def tolerance_lsb(dtypes: Sequence[str], override: int | None = None) -> int:
    """The accepted difference for tensors of these dtypes (`override` wins when given)."""
    if override is not None:
        return override
    return max((TOLERANCE_LSB.get(d, 1) for d in dtypes), default=1)


@dataclass(frozen=True)
class TensorDiff:
    """One tensor of the diverging op: what it is and how far the two runtimes differ on it."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scales: tuple[float, ...]
    zero_point: int | None
    constant: bool
    external_buffer: bool
    max_diff: float  # LSB for integer tensors, absolute for float
    histogram: dict[str, float] = field(default_factory=dict)  # |diff| LSB bucket -> share

    def describe(self) -> str:
        scale = ("" if not self.scales else f" scale {self.scales[0]:.3g}" if len(self.scales) == 1
                 else f" per-channel({len(self.scales)}) scales "
                      f"{min(self.scales):.3g}..{max(self.scales):.3g}")
        zp = f" zp {self.zero_point}" if self.zero_point is not None else ""
        kind = (" constant" + (" in an EXTERNAL buffer" if self.external_buffer else "")
                if self.constant else "")
        unit = "" if self.dtype.startswith("float") else " LSB"
        return (f"{self.dtype}{list(self.shape)}{scale}{zp}{kind}: max |diff| "
                f"{self.max_diff:g}{unit}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "dtype": self.dtype,
                "shape": list(self.shape), "scales": [min(self.scales), max(self.scales)]
                if self.scales else [], "per_channel": len(self.scales) > 1,
                "zero_point": self.zero_point, "constant": self.constant,
                "external_buffer": self.external_buffer, "max_diff": self.max_diff,
                "histogram": self.histogram}


@dataclass(frozen=True)
class Divergence:
    """The first op (in execution order) whose output differs beyond tolerance."""

    runtime: str
    reference: str
    op_index: int
    op: str
    options: dict[str, Any]
    inputs: tuple[TensorDiff, ...]
    outputs: tuple[TensorDiff, ...]
    tolerance_lsb: int
    hints: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.outputs[0].name if self.outputs else f"op_{self.op_index}"

    @property
    def short_name(self) -> str:
        return short_name(self.name)

    def line(self) -> str:
        worst_in = max((t.max_diff for t in self.inputs if not t.constant), default=0)
        return (f"first divergence {self.runtime} vs {self.reference}: op {self.op_index} "
                f"{self.op} '{self.short_name}': output {max(t.max_diff for t in self.outputs):g} LSB, "
                f"its inputs {worst_in:g} LSB" + (f" ({self.hints[0]})" if self.hints else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "reference": self.reference, "op_index": self.op_index,
                "op": self.op, "name": self.name, "options": self.options,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "tolerance_lsb": self.tolerance_lsb, "hints": list(self.hints)}


@dataclass(frozen=True)
class RuntimeResult:
    """One runtime's outputs against the reference runtime (and the float model if given)."""

    runtime: str
    version: str
    error: str = ""
    max_diff_lsb: tuple[float, ...] = ()  # per output vs the reference: LSB (float outputs: abs)
    tolerance_lsb: int = 0
    within: bool = True  # every output within tolerance (float outputs: FLOAT_TOLERANCE relative)
    drift: bool = False  # beyond tolerance, but every op compared and none parts: rounding
    sqnr_db: tuple[float, ...] = ()  # per output, vs the float model
    cosine: tuple[float, ...] = ()
    task: dict[str, Any] | None = None
    divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        return not self.error and (self.within or self.drift)

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "version": self.version, "runs": not self.error,
                "error": self.error or None, "max_abs_diff_lsb": list(self.max_diff_lsb),
                "within_tolerance": self.ok, "rounding_drift": self.drift,
                "sqnr_db_vs_float": list(self.sqnr_db) or None,
                "cosine_vs_float": list(self.cosine) or None, "task": self.task,
                "first_divergence": self.divergence.to_dict() if self.divergence else None}


@dataclass(frozen=True)
class Comparison:
    """Every runtime's result, the reference's, and model-level diagnostics."""

    samples: int
    reference: RuntimeResult
    others: tuple[RuntimeResult, ...]
    tolerance_lsb: int
    diagnostics: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.reference.error and all(r.ok for r in self.others)

    def result(self, runtime: str) -> RuntimeResult:
        return next(r for r in (self.reference, *self.others) if r.runtime == runtime)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "reference": self.reference.runtime,
                "tolerance_lsb": self.tolerance_lsb, "ok": self.ok,
                "runtimes": [r.to_dict() for r in (self.reference, *self.others)],
                "diagnostics": list(self.diagnostics)}


@dataclass
class _Capture:
    version: str
    outputs: list[np.ndarray] = field(default_factory=list)
    tensors: dict[int, np.ndarray] = field(default_factory=dict)
    error: str = ""


def compare_runtimes(tflite: bytes, raw_inputs: Sequence[np.ndarray],
                     runtimes: Sequence[str] = DEFAULT_RUNTIMES, per_op: bool = True,
                     tolerance: int | None = None, float_values: Sequence[np.ndarray] | None = None,
                     y: np.ndarray | None = None) -> Comparison:
    """Run `tflite` on `raw_inputs` (per model input, samples first, already quantised) in each
    runtime and compare with the first.

    Args:
        per_op: also compare every op's outputs where two runtimes keep intermediates.
        tolerance: LSB accepted between runtimes (default: by output dtype, TOLERANCE_LSB).
        float_values: the float model's outputs on the same samples (SQNR/cosine per runtime).
        y: labels or targets for the task metric per runtime.
    """
    tree = read_tree(tflite)
    sg = tree.subgraphs[0]
    out_specs = _output_specs(tflite)
    tol = tolerance_lsb([s.dtype for s in out_specs], tolerance)
    indices = _op_output_indices(sg) if per_op else []
    kept_bytes = _tensor_bytes(sg, indices)
    captures = {name: _capture(name, tflite, raw_inputs, indices if name in PER_OP else [],
                               kept_bytes) for name in runtimes}
    ref_name = runtimes[0]
    ref = captures[ref_name]
    results = []
    for name in runtimes:
        cap = captures[name]
        result = _score(name, cap, ref, out_specs, tol, float_values, y)
        if name != ref_name and not result.ok and cap.tensors and ref.tensors:
            result = _with_divergence(result, _first_divergence(tree, tflite, cap, ref, name,
                                                                ref_name, tolerance))
        results.append(result)
    return Comparison(len(raw_inputs[0]) if raw_inputs else 0, results[0], tuple(results[1:]),
                      tol, tuple(diagnose(tflite, tree)))


def diagnose(tflite: bytes, tree: Any = None) -> list[str]:
    """Model-level facts that make runtimes disagree (`tree`: the parsed model, if at hand)."""
    found = []
    external = external_buffers(tflite)
    if external:
        found.append(f"{len(external)} constant buffers are stored outside the flatbuffer "
                     "(offset/size): LiteRT reads them, TFLite Micro reads only inline data and "
                     "computes with missing weights; `edgeq convert` writes them inline")
    tree = tree or read_tree(tflite)
    int8_sums = [k for k, op in enumerate(tree.subgraphs[0].operators)
                 if op_type(tree, op) == "SUM"
                 and tensor_type_name(tree.subgraphs[0].tensors[int(op.inputs[0])].type) == "int8"]
    if int8_sums:
        found.append(f"int8 SUM (op {', '.join(map(str, int8_sums[:4]))}): LiteRT's reference "
                     "SUM kernel reads int8 data as uint8 and gets it wrong (google-ai-edge/LiteRT "
                     "#4079, fix pending), so litert-ref is no reference there; its builtin "
                     "kernel is right")
    return found


def _with_divergence(result: RuntimeResult, divergence: Divergence | None) -> RuntimeResult:
    """Every op was compared: a divergence names where they part; none means rounding drift."""
    return replace(result, divergence=divergence, drift=divergence is None)


def _output_specs(tflite: bytes) -> list[TensorSpec]:
    with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
        return rt.outputs()


def _op_output_indices(sg: Any) -> list[int]:
    return [int(i) for op in sg.operators for i in op.outputs if i >= 0]


def _capture(name: str, tflite: bytes, raw_inputs: Sequence[np.ndarray],
             indices: list[int], kept_bytes: int) -> _Capture:
    """Run one runtime; `kept_bytes`: what TFLM needs on top of its arena to keep `indices`."""
    n = len(raw_inputs[0]) if raw_inputs else 1
    if name == "tflm":
        arena = default_tflm_arena(len(tflite)) + (kept_bytes if indices else 0)
        run = run_tflm(tflite, [[x[k] for x in raw_inputs] for k in range(n)], arena,
                       capture=indices)
        return _Capture(run.version, run.outputs, run.tensors, run.error)
    runs: list[list[np.ndarray]] = []
    tensors: dict[int, list[np.ndarray]] = {i: [] for i in indices}
    try:
        with captured_output("LiteRT"):
            rt = LiteRTRuntime(tflite, use_xnnpack=name == "litert",
                               reference_kernels=name == "litert-ref",
                               preserve_all_tensors=bool(indices))
        with rt:
            for k in range(n):
                runs.append(rt.infer([x[k] for x in raw_inputs]))
                for i in indices:
                    tensors[i].append(rt.tensor(i))
            version = rt.version
    except (RuntimeError, ValueError) as e:
        return _Capture("", error=" ".join(str(e).split())[:300])
    outputs = [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]
    return _Capture(version, outputs, {i: np.stack(v) for i, v in tensors.items()})


def _tensor_bytes(sg: Any, indices: list[int]) -> int:
    """Bytes of the tensors `indices` (at most 4 per element, plus alignment): what TFLM keeps
    on top of its arena when preserving them."""
    return sum(int(np.prod(sg.tensors[i].shape if sg.tensors[i].shape is not None else ())) * 4
               + 16 for i in indices)


def _score(name: str, cap: _Capture, ref: _Capture, specs: list[TensorSpec], tol: int,
           float_values: Sequence[np.ndarray] | None, y: np.ndarray | None) -> RuntimeResult:
    if cap.error or ref.error:
        return RuntimeResult(name, cap.version, error=cap.error or f"reference failed: {ref.error}",
                             tolerance_lsb=tol)
    diffs, within = [], True
    for a, b, spec in zip(cap.outputs, ref.outputs, specs):
        d = np.abs(a.reshape(b.shape).astype(np.float64) - b.astype(np.float64))
        worst = float(d.max()) if d.size else 0.0
        if spec.dtype.startswith("float"):
            within &= worst <= FLOAT_TOLERANCE * max(float(np.max(np.abs(b))) if b.size else 0, 1e-12)
            diffs.append(worst)
        else:
            within &= worst <= tol
            diffs.append(int(worst))
    result = RuntimeResult(name, cap.version, max_diff_lsb=tuple(diffs), tolerance_lsb=tol,
                           within=within)
    if float_values is None:
        return result
    values = [dequantize(o.reshape(f.shape), s) for o, f, s in zip(cap.outputs, float_values, specs)]
    return replace(result,
                   sqnr_db=tuple(finite_db(sqnr_db(f, v)) for f, v in zip(float_values, values)),
                   cosine=tuple(cosine(f, v) for f, v in zip(float_values, values)),
                   task=task_metric(values[0], y) if y is not None else None)


def _first_divergence(tree: Any, tflite: bytes, cap: _Capture, ref: _Capture, name: str,
                      ref_name: str, tolerance: int | None) -> Divergence | None:
    """The first op that parts from the reference: it adds more than the tolerance to the
    difference its inputs carried, on more than PART_SHARE of its output elements (any element
    when the tolerance is 0). None when no op does: the outputs only drift by rounding."""
    sg = tree.subgraphs[0]
    external = set(external_buffers(tflite))
    produced = set(_op_output_indices(sg))
    for k, op in enumerate(sg.operators):
        outs = [_tensor_diff(sg, int(i), cap, ref, external, produced) for i in op.outputs if i >= 0]
        tol = tolerance_lsb([t.dtype for t in outs], tolerance)
        if not any(_parts(t, tol, cap, ref) for t in outs):
            continue
        ins = tuple(_tensor_diff(sg, int(i), cap, ref, external, produced) for i in op.inputs if i >= 0)
        carried = max((t.max_diff for t in ins if not t.constant and not t.dtype.startswith("float")),
                      default=0.0)
        if all(t.dtype.startswith("float") for t in outs) or \
                max(t.max_diff for t in outs) > carried + tol:
            return Divergence(name, ref_name, k, op_type(tree, op), _options(op), ins, tuple(outs),
                              tol, tuple(_hints(ins, name)))
    return None


def _parts(t: TensorDiff, tol: int, cap: _Capture, ref: _Capture) -> bool:
    """Beyond tolerance on more than PART_SHARE of the elements, or on any element by more than
    16x the tolerance (a wrong channel); any difference at all when the tolerance is 0."""
    reference = ref.tensors.get(t.index)
    if reference is None or not _beyond(t, tol, reference):
        return False
    if t.dtype.startswith("float") or tol == 0 or t.max_diff > 16 * tol:
        return True
    a = cap.tensors[t.index].astype(np.float64)
    share = float(np.mean(np.abs(a - reference.reshape(a.shape).astype(np.float64)) > tol))
    return share > PART_SHARE


def _beyond(t: TensorDiff, tol: int, reference: np.ndarray | None) -> bool:
    if not t.dtype.startswith("float"):
        return t.max_diff > tol
    scale = float(np.max(np.abs(reference))) if reference is not None and reference.size else 1.0
    return t.max_diff > FLOAT_TOLERANCE * max(scale, 1e-12)


def _tensor_diff(sg: Any, index: int, cap: _Capture, ref: _Capture, external: set[int],
                 produced: set[int]) -> TensorDiff:
    t = sg.tensors[index]
    q = t.quantization
    scales = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else ()))
    zps = q.zeroPoint if q is not None and q.zeroPoint is not None else []
    a, b = cap.tensors.get(index), ref.tensors.get(index)
    max_diff, histogram = 0.0, {}
    if a is not None and b is not None and a.size:
        d = np.abs(a.astype(np.float64) - b.reshape(a.shape).astype(np.float64))
        max_diff = float(d.max())
        if not np.issubdtype(a.dtype, np.floating):
            histogram = {_bucket(lo, hi): _share(d, lo, hi) for lo, hi in _HISTOGRAM}
    constant = index not in produced and t.buffer > 0 and index not in [int(i) for i in sg.inputs]
    return TensorDiff(index, text(t.name), tensor_type_name(t.type),
                      tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                      scales, int(zps[0]) if len(zps) else None, constant,
                      constant and t.buffer in external, max_diff, histogram)


def _share(diff: np.ndarray, lo: int, hi: int | None) -> float:
    upper = np.inf if hi is None else hi
    return round(float(np.mean((diff >= lo) & (diff <= upper))), 4)


def _bucket(lo: int, hi: int | None) -> str:
    return f"{lo}" if lo == hi else f"{lo}+" if hi is None else f"{lo}-{hi}"


def _options(op: Any) -> dict[str, Any]:
    """The op's builtin options, enums by name (fusedActivationFunction=RELU6)."""
    options: dict[str, Any] = {}
    if op.builtinOptions is None:  # TANH, RSQRT, ...: no options table
        return options
    for key, value in vars(op.builtinOptions).items():
        names = _ENUMS.get(key)
        if names and isinstance(value, int) and 0 <= value < len(names):
            options[key] = names[value]
        elif isinstance(value, (bool, int, float, str)):
            options[key] = value
    return options


def _hints(inputs: tuple[TensorDiff, ...], runtime: str) -> list[str]:
    hints = []
    if any(t.external_buffer for t in inputs) and runtime == "tflm":
        hints.append("a constant input lives in an external buffer, which TFLite Micro does not "
                     "read: its weights are missing there")
    activations = [t for t in inputs if not t.constant]
    if activations and max(t.max_diff for t in activations) <= 1 and not hints:
        hints.append("its inputs agree within 1 LSB: the two kernels compute this op differently")
    return hints


@dataclass(frozen=True)
class CompareConfig:
    """What `edgeq compare` needs; the CLI only fills this in."""

    model: Any  # Path of the quantised .tflite
    eval: Any  # Path of eval.npz
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    float_model: Any = None  # Path of the float model (any kind edgeq loads), optional
    samples: int = 16
    tolerance: int | None = None
    per_op: bool = True
    preprocessing: Any = None  # default: preprocessing.json beside the model


def compare_model(cfg: CompareConfig) -> Comparison:
    """Load the model and data of `cfg`, then `compare_runtimes` on the first `samples`."""
    from device_agent.preprocessing import Contract
    from edgeq.model.inputs import read_contracts
    from edgeq.model.load import load_model, read_quantized_tflite
    from edgeq.study.evaluate import quantized_reference, run_model

    tflite = read_quantized_tflite(cfg.model)
    contracts = {c["input"]: Contract.from_dict(c) for c in read_contracts(cfg.model, cfg.preprocessing)}
    ref = quantized_reference(tflite, cfg.eval, contracts, cfg.samples)
    float_values = None
    if cfg.float_model is not None:
        float_values = run_model(load_model(cfg.float_model).tflite, ref.data, xnnpack=True).values
    return compare_runtimes(tflite, ref.raw_inputs, cfg.runtimes, cfg.per_op, cfg.tolerance,
                            float_values, ref.data.y)
