"""Load a Keras / SavedModel / float .tflite model as a float .tflite with batch fixed to 1."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from device_agent.runtimes import LiteRTRuntime, TensorSpec
from edgeq.capture import captured_output
from edgeq.errors import InputError, ModelError
from edgeq.model.flatbuffer import TFLITE_MAGIC, pack_tree, read_tree

log = logging.getLogger("edgeq")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class FloatModel:
    """A float TFLite flatbuffer with static shapes, plus where it came from."""

    tflite: bytes
    source: str
    kind: str  # keras | savedmodel | tflite
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def load_model(path: str | Path) -> FloatModel:
    """Load MODEL (a .keras/.h5 file, a SavedModel dir or a float .tflite) as a float .tflite.

    Side effect for library callers: loading a .keras/.h5 file resets Keras' global session
    (`keras.backend.clear_session()`), so op names, which plans are keyed by, do not depend on
    what was loaded before. Models the caller already holds keep working; their future layer
    names restart from fresh counters. .tflite and SavedModel loads touch no global state.

    Raises:
        InputError: the path is missing or is not a model of a known kind.
        ModelError: the model has dynamic dimensions other than batch, or fails to convert.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"model not found: {path} (expected a .keras/.h5 file, a SavedModel "
                         "directory or a float .tflite)")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise InputError(f"{path} is a directory without saved_model.pb; expected a SavedModel")
        kind, tflite = "savedmodel", _run_converter(path, tf_converter(path))
    elif path.suffix.lower() == ".tflite":
        kind, tflite = "tflite", _read_float_tflite(path)
    elif path.suffix.lower() in KERAS_SUFFIXES:
        _check_keras_file(path)
        kind, tflite = "keras", _run_converter(path, tf_converter(path))
    else:
        raise InputError(f"{path}: unknown model type '{path.suffix}'; expected .keras, .h5, "
                         ".tflite or a SavedModel directory")
    return _describe(tflite, str(path), kind)


_KERAS_MAGIC = {".keras": (b"PK\x03\x04", "a zip archive"),
                ".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
                ".hdf5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file")}


def _check_keras_file(path: Path) -> None:
    """A .keras file is a zip archive and an .h5 file HDF5: say so before Keras says 'not found'."""
    if not path.is_file():
        raise InputError(f"{path} is not a file; expected a {path.suffix} model file")
    magic, kind = _KERAS_MAGIC[path.suffix.lower()]
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        raise InputError(f"{path}: not a Keras {path.suffix} model (expected {kind}, the file "
                         f"starts with {head[:8]!r}); save it with model.save('{path.name}')")


def from_tflite_bytes(tflite: bytes, source: str = "<bytes>") -> FloatModel:
    """Wrap an in-memory float .tflite (validated like a file)."""
    return _describe(_check_float_tflite(tflite, source), source, "tflite")


def _describe(tflite: bytes, source: str, kind: str) -> FloatModel:
    try:
        with captured_output("LiteRT"), LiteRTRuntime(tflite) as rt:
            inputs, outputs = tuple(rt.inputs()), tuple(rt.outputs())
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{source}: LiteRT cannot load the converted model: {_one_line(e)}") from e
    for spec in inputs:
        if any(d <= 0 for d in spec.shape):
            raise ModelError(f"{source}: input '{spec.name}' has dynamic shape {list(spec.shape)}; "
                             "only the batch dimension may be dynamic (fixed to 1)")
    return FloatModel(tflite, source, kind, inputs, outputs)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with captured_output("TensorFlow import"):
        import tensorflow as tf
    return tf


def tf_converter(path: Path):
    """A TFLiteConverter for a Keras file or SavedModel dir, with the batch fixed to 1."""
    path = Path(path)
    return _saved_model_converter(path) if path.is_dir() else _keras_converter(path)


def _keras_converter(path: Path):
    tf = _tf()
    import keras

    # Tensor names carry Keras' global layer counters ("functional_3/..."); plans key ops by
    # name, so start every load from fresh counters to keep names stable across runs.
    keras.backend.clear_session()
    try:
        with captured_output("Keras load"):
            model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise InputError(f"{path}: not a loadable Keras model: {_one_line(e)}") from e
    inputs = []
    for t in model.inputs:
        shape = tuple(t.shape[1:])
        if any(d is None for d in shape):
            raise ModelError(f"{path}: input '{t.name}' has dynamic shape {[None, *shape]}; only "
                             "the batch dimension may be dynamic (it is fixed to 1)")
        inputs.append(keras.Input(shape=shape, batch_size=1, dtype=t.dtype, name=t.name))
    fixed = keras.Model(inputs, model(inputs if len(inputs) > 1 else inputs[0]))
    return tf.lite.TFLiteConverter.from_keras_model(fixed)


def _saved_model_converter(path: Path):
    tf = _tf()
    try:
        with captured_output("SavedModel load"):
            loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except Exception as e:
        raise InputError(f"{path}: not a loadable SavedModel with a serving_default signature: "
                         f"{_one_line(e)}") from e
    specs = {}
    for name, spec in fn.structured_input_signature[1].items():
        dims = list(spec.shape)
        if any(d is None for d in dims[1:]):
            raise ModelError(f"{path}: input '{name}' has dynamic shape {dims}; only the batch "
                             "dimension may be dynamic (it is fixed to 1)")
        specs[name] = tf.TensorSpec([1, *dims[1:]], spec.dtype, name=name)

    @tf.function(input_signature=[specs])
    def serve(kwargs):
        return fn(**kwargs)

    concrete = serve.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)


def _run_converter(path: Path, converter) -> bytes:
    try:
        with captured_output("TFLiteConverter"):
            return bytes(converter.convert())
    except Exception as e:
        raise ModelError(f"{path}: TensorFlow could not convert the model to TFLite: "
                         f"{_one_line(e)}") from e


def read_quantized_tflite(path: Path) -> bytes:
    """The bytes of a quantised .tflite (from `edgeq convert`), or InputError saying why not."""
    if not Path(path).is_file():
        raise InputError(f"model not found: {path} (expected a quantised .tflite from edgeq convert)")
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise InputError(f"{path}: not a TFLite flatbuffer (missing 'TFL3' identifier); expected "
                         "the model.tflite written by `edgeq convert`")
    return data


def _read_float_tflite(path: Path) -> bytes:
    return _check_float_tflite(path.read_bytes(), str(path))


def _check_float_tflite(data: bytes, source: str) -> bytes:
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise InputError(f"{source}: not a TFLite flatbuffer (missing 'TFL3' identifier)")
    try:
        with captured_output("LiteRT"), LiteRTRuntime(data) as rt:
            specs = rt.inputs() + rt.outputs()
    except (ValueError, RuntimeError) as e:
        raise InputError(f"{source}: corrupt or unloadable .tflite: {_one_line(e)}") from e
    quantized = [s.name for s in specs if s.quantized]
    if quantized:
        raise InputError(f"{source}: model is already quantised (I/O {', '.join(quantized)}); "
                         "give edgeq the float model")
    from edgeq.model.rewrite import float16_weights_to_float32

    data, converted = float16_weights_to_float32(data)
    if converted:
        log.info("%s: %d float16 weight tensors read as float32", source, converted)
    return _fix_batch(data, source)


def _fix_batch(data: bytes, source: str) -> bytes:
    """Set a dynamic batch dimension (-1) of the graph inputs to 1."""
    model = read_tree(data)
    changed = False
    for subgraph in model.subgraphs:
        for index in subgraph.inputs:
            sig = subgraph.tensors[index].shapeSignature
            if sig is not None and len(sig) and sig[0] == -1:
                if any(d == -1 for d in sig[1:]):
                    name = subgraph.tensors[index].name
                    name = name.decode() if isinstance(name, bytes) else name
                    raise ModelError(f"{source}: input '{name}' has dynamic shape {list(sig)}; "
                                     "only the batch dimension may be dynamic")
                sig[0] = 1
                changed = True
    if not changed:
        return data
    log.info("fixed the dynamic batch dimension of %s to 1", source)
    return pack_tree(model)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__
