"""Interpreter backends behind one `Runtime` protocol: LiteRT, tflite-runtime and TFLite Micro.

A runtime takes raw (already quantised) input arrays and returns raw output arrays, so a host
run and a device run of the same model compare directly. `quantize`/`dequantize` convert between
float data and a tensor's integer representation.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from .errors import AgentError


class RuntimeUnavailable(AgentError, RuntimeError):
    """The interpreter package for a runtime is not installed."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in ("int8", "int16", "uint8")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], float(d["scale"]), int(d["zero_point"]))


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float data -> the tensor's dtype (affine quantisation when the tensor is quantised)."""
    dtype = np.dtype(spec.dtype)
    if not spec.quantized:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The tensor's dtype -> float32 (identity cast for float and unquantised integer tensors)."""
    if not spec.quantized:
        return np.asarray(q).astype(np.float32)
    return ((np.asarray(q, np.float64) - spec.zero_point) * spec.scale).astype(np.float32)


@runtime_checkable
class Runtime(Protocol):
    """A loaded model that runs one sample at a time. Use as a context manager.

    `infer` = `load_inputs` + `invoke` + `read_outputs`; benchmarks time `invoke` alone, as
    LiteRT's benchmark_model does."""

    name: str
    version: str

    def inputs(self) -> list[TensorSpec]: ...

    def outputs(self) -> list[TensorSpec]: ...

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def load_inputs(self, inputs: Sequence[np.ndarray]) -> None: ...

    def invoke(self) -> None: ...

    def read_outputs(self) -> list[np.ndarray]: ...

    def __enter__(self) -> Runtime: ...

    def __exit__(self, *exc: object) -> None: ...


def spec_from_details(d: dict[str, Any], name: str | None = None) -> TensorSpec:
    scale, zero_point = d.get("quantization", (0.0, 0))
    params = d.get("quantization_parameters") or {}
    if not scale and len(params.get("scales", [])) == 1:
        scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
    return TensorSpec(
        name=name or d.get("name", ""),
        shape=tuple(int(s) for s in d["shape"]),
        dtype=np.dtype(d["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


class _RuntimeBase:
    name = "base"
    version = "unknown"
    module = ""  # the package module that provides the interpreter
    dist = ""  # its distribution name (for the version)
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    def __init__(self, model: bytes, **options: Any) -> None:  # each runtime opens a model
        raise NotImplementedError

    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the interpreter."""

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Check and load `inputs` (raw, in the model's dtypes), invoke, return raw outputs."""
        self.load_inputs(inputs)
        self.invoke()
        return self.read_outputs()

    def load_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def read_outputs(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _check_inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._inputs):
            raise ValueError(f"model has {len(self._inputs)} inputs, got {len(inputs)} arrays")
        checked = []
        for given, spec in zip(inputs, self._inputs):
            arr = np.asarray(given)
            if tuple(arr.shape) != spec.shape or arr.dtype.name != spec.dtype:
                raise ValueError(
                    f"input '{spec.name}' needs {spec.dtype}{list(spec.shape)}, "
                    f"got {arr.dtype.name}{list(arr.shape)}"
                )
            checked.append(arr)
        return checked


class _TfliteInterpreterRuntime(_RuntimeBase):
    """Shared by LiteRT and tflite-runtime: same Interpreter API, different packages."""

    def __init__(self, model: bytes, num_threads: int = 1, use_xnnpack: bool = False,
                 preserve_all_tensors: bool = False, reference_kernels: bool = False) -> None:
        try:
            mod = importlib.import_module(self.module)
        except ImportError as e:
            raise RuntimeUnavailable(f"{self.name} needs the '{self.dist}' package") from e
        kwargs: dict[str, Any] = {"model_content": bytes(model), "num_threads": num_threads,
                                  "experimental_preserve_all_tensors": preserve_all_tensors}
        if reference_kernels:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_REF
        elif not use_xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.version = _dist_version(self.dist)
        self.interpreter = mod.Interpreter(**kwargs)
        self.interpreter.allocate_tensors()
        in_names, out_names = _signature_names(self.interpreter)
        self._input_details = self.interpreter.get_input_details()
        self._output_details = self.interpreter.get_output_details()
        self._inputs = [spec_from_details(d, in_names.get(d["index"])) for d in self._input_details]
        self._outputs = [spec_from_details(d, out_names.get(d["index"])) for d in self._output_details]

    def load_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        for arr, d in zip(self._check_inputs(inputs), self._input_details):
            self.interpreter.set_tensor(d["index"], arr)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def read_outputs(self) -> list[np.ndarray]:
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self._output_details]

    def tensor(self, index: int) -> np.ndarray:
        """Tensor `index` after invoke (intermediates need preserve_all_tensors)."""
        return np.array(self.interpreter.get_tensor(index))


def _signature_names(interpreter: Any) -> tuple[dict[int, str], dict[int, str]]:
    """Map tensor index -> the first signature's names (what users call inputs and outputs)."""
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        return ({d["index"]: arg for arg, d in runner.get_input_details().items()},
                {d["index"]: arg for arg, d in runner.get_output_details().items()})
    return {}, {}


class LiteRTRuntime(_TfliteInterpreterRuntime):
    """Google's LiteRT (ai-edge-litert) interpreter."""

    name = "litert"
    module = "ai_edge_litert.interpreter"
    dist = "ai-edge-litert"


class TfliteRuntime(_TfliteInterpreterRuntime):
    """The older tflite-runtime package (Raspberry Pi OS images that predate LiteRT)."""

    name = "tflite-runtime"
    module = "tflite_runtime.interpreter"
    dist = "tflite-runtime"


class TFLMRuntime(_RuntimeBase):
    """TensorFlow Lite Micro's reference interpreter: a microcontroller simulated on the host.

    A too-small arena can crash the process; load untrusted models in a child process
    (see `device_agent.tflm_child`).
    """

    name = "tflm"
    module = "tflite_micro.python.tflite_micro.runtime"
    dist = "tflite-micro"

    def __init__(self, model: bytes, arena_size: int | None = None, num_threads: int = 1,
                 preserve_all_tensors: bool = False) -> None:
        # num_threads is accepted so every runtime opens the same way; TFLM runs on one thread.
        del num_threads
        try:
            from tflite_micro.python.tflite_micro import runtime as tflm
        except ImportError as e:
            raise RuntimeUnavailable("tflm needs the 'tflite-micro' package") from e
        self.version = _dist_version(self.dist)
        self.arena_size = arena_size or default_tflm_arena(len(model))
        config = (tflm.InterpreterConfig.kPreserveAllTensors if preserve_all_tensors
                  else tflm.InterpreterConfig.kAllocationRecording)
        self.interpreter = tflm.Interpreter.from_bytes(bytes(model), arena_size=self.arena_size,
                                                       intrepreter_config=config)
        n_in, n_out = _count_io(self.interpreter)
        self._inputs = [spec_from_details(self.interpreter.get_input_details(i), f"input_{i}")
                        for i in range(n_in)]
        self._outputs = [spec_from_details(self.interpreter.get_output_details(i), f"output_{i}")
                         for i in range(n_out)]

    def load_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        for i, arr in enumerate(self._check_inputs(inputs)):
            self.interpreter.set_input(arr, i)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def read_outputs(self) -> list[np.ndarray]:
        return [np.array(self.interpreter.get_output(i)) for i in range(len(self._outputs))]

    def tensor(self, index: int) -> np.ndarray:
        """Tensor `index` of subgraph 0 after invoke (needs preserve_all_tensors)."""
        return np.array(self.interpreter.GetTensor(index, 0)["tensor_data"])


def default_tflm_arena(model_size: int) -> int:
    """A generous arena for checks (the exporter measures the real minimum)."""
    return max(10 * model_size, 256 * 1024) + 1024 * 1024


def _count_io(interpreter: Any) -> tuple[int, int]:
    """TFLM's binding has no input count: probe indices (its C++ log of the miss is silenced)."""
    def count(get: Callable[[int], Any]) -> int:
        n = 0
        while True:
            try:
                get(n)
            except (IndexError, RuntimeError, ValueError):
                return n
            n += 1
            if n > 64:
                return n
    with _stderr_silenced():
        return count(interpreter.get_input_details), count(interpreter.get_output_details)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def runtime_registry() -> dict[str, type[_RuntimeBase]]:
    """Known runtimes by name, in `auto` preference order."""
    return {"litert": LiteRTRuntime, "tflite-runtime": TfliteRuntime, "tflm": TFLMRuntime}


def resolve_runtime(name: str) -> tuple[str, str]:
    """(runtime name, package version) that `name` ('auto' = first installed) will open, without
    loading a model; RuntimeUnavailable when it is not installed."""
    registry = runtime_registry()
    if name != "auto" and name not in registry:
        raise ValueError(f"unknown runtime '{name}'; known: {', '.join(registry)}, auto")
    for candidate, cls in registry.items():
        if name not in ("auto", candidate):
            continue
        try:
            importlib.import_module(cls.module)
        except ImportError:
            continue
        return candidate, _dist_version(cls.dist)
    wanted = "any of " + ", ".join(registry) if name == "auto" else f"'{name}'"
    raise RuntimeUnavailable(f"no interpreter installed for {wanted}; "
                             "install ai-edge-litert (pip install 'edgeq[agent]')")


def open_runtime(name: str, model: bytes, **kwargs: Any) -> Runtime:
    """Open `model` in the runtime `name` ('auto' = first one installed)."""
    registry = runtime_registry()
    if name == "auto":
        for candidate in registry.values():
            try:
                return candidate(model, **kwargs)
            except RuntimeUnavailable:
                continue
        raise RuntimeUnavailable(f"no runtime installed; install one of {', '.join(registry)}")
    if name not in registry:
        raise ValueError(f"unknown runtime '{name}'; known: {', '.join(registry)}, auto")
    return registry[name](model, **kwargs)
