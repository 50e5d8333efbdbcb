"""The deploy bundle: one signed file carrying a model and everything needed to judge it on a
device — I/O specs, preprocessing contract, eval data and the host's quantised reference outputs.

A bundle is an uncompressed zip (the transfer moves the model's own bytes) with fixed members:

    bundle.json      format, name, model sha256, io specs, preprocessing, eval/reference info
    model.tflite     the quantised model
    eval.npz         optional: in_<i> float inputs BEFORE preprocessing, optional y
    reference.npz    optional: out_<i> raw outputs of the host's LiteRT on those inputs

The host writes it (`write_bundle`); the agent opens it only after its sha256 and signature have
been checked (`extract_bundle`), and reads only these member names.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import save_npz
from .errors import AgentError
from .preprocessing import Contract
from .protocol import SHA256_HEX, ProtocolError, decode
from .runtimes import TensorSpec

FORMAT = "edgeq-bundle"
SCHEMA_VERSION = 1
META, MODEL, EVAL, REFERENCE = "bundle.json", "model.tflite", "eval.npz", "reference.npz"
MEMBERS = (META, MODEL, EVAL, REFERENCE)
MAX_META_BYTES = 1024 * 1024
MAX_ARRAY_BYTES = 256 * 1024 * 1024  # one eval/reference array, loaded whole by a benchmark
DTYPES = frozenset({"int8", "uint8", "int16", "int32", "int64", "float16", "float32", "bool"})
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


class BundleError(AgentError, ValueError):
    """A bundle is malformed or does not match its own description."""


def write_bundle(path: Path, model: bytes, name: str, inputs: list[TensorSpec],
                 outputs: list[TensorSpec], contracts: list[dict[str, Any]] | None = None,
                 eval_inputs: list[np.ndarray] | None = None, y: np.ndarray | None = None,
                 reference: list[np.ndarray] | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a bundle file and return its bundle.json."""
    meta: dict[str, Any] = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "name": name,
        "model": {"file": MODEL, "bytes": len(model), "sha256": hashlib.sha256(model).hexdigest()},
        "io": {"inputs": [s.to_dict() for s in inputs], "outputs": [s.to_dict() for s in outputs]},
        "preprocessing": list(contracts or []),
        "eval": None, "reference": None, **(extra or {}),
    }
    members = {MODEL: bytes(model)}
    if eval_inputs is not None:
        arrays = {f"in_{i}": np.asarray(x) for i, x in enumerate(eval_inputs)}
        if y is not None:
            arrays["y"] = np.asarray(y)
        members[EVAL] = _npz_bytes(arrays)
        meta["eval"] = {"file": EVAL, "samples": len(eval_inputs[0]),
                        "labels": None if y is None else
                        ("class" if np.issubdtype(np.asarray(y).dtype, np.integer) else "target")}
    if reference is not None:
        members[REFERENCE] = _npz_bytes({f"out_{i}": r for i, r in enumerate(reference)})
        meta["reference"] = {"file": REFERENCE, "samples": len(reference[0])}
    members[META] = (json.dumps(meta, indent=1) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for member in MEMBERS:
            if member in members:
                z.writestr(member, members[member])
    return meta


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    save_npz(buffer, arrays)
    return buffer.getvalue()


@dataclass(frozen=True)
class Bundle:
    """An extracted, self-consistent bundle in its own directory."""

    directory: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def model_sha256(self) -> str:
        return str(self.meta["model"]["sha256"])

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.meta["io"]["inputs"]]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.meta["io"]["outputs"]]

    def contracts(self) -> dict[str, Contract]:
        """Preprocessing contracts by the input name they apply to."""
        return {c["input"]: Contract.from_dict(c) for c in self.meta.get("preprocessing") or []}

    def eval_inputs(self) -> list[np.ndarray] | None:
        """Float inputs per model input (before preprocessing), or None without eval data."""
        if not self.meta.get("eval"):
            return None
        with np.load(self.directory / EVAL, allow_pickle=False) as npz:
            return [npz[f"in_{i}"] for i in range(len(self.meta["io"]["inputs"]))]

    def labels(self) -> np.ndarray | None:
        """The eval set's `y`, if it has one (read alone: npz members load lazily)."""
        if not self.meta.get("eval"):
            return None
        with np.load(self.directory / EVAL, allow_pickle=False) as npz:
            return npz["y"] if "y" in npz.files else None

    def reference(self) -> list[np.ndarray] | None:
        """The host's raw outputs on the eval inputs, one array per output."""
        if not self.meta.get("reference"):
            return None
        with np.load(self.directory / REFERENCE, allow_pickle=False) as npz:
            return [npz[f"out_{i}"] for i in range(len(self.meta["io"]["outputs"]))]

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        """Re-open a bundle extracted earlier (its bundle.json is trusted: it was checked)."""
        return cls(Path(directory), json.loads((Path(directory) / META).read_text()))


def extract_bundle(path: Path, dest: Path) -> Bundle:
    """Check a (signature-verified) bundle file field by field, extract its known members into
    `dest` (fsynced) and check the arrays' headers against bundle.json — before anything is
    loaded or activated. Any problem, including a full disk, is a BundleError saying what."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if META not in names or MODEL not in names:
                raise BundleError(f"bundle lacks {META} or {MODEL} (has: "
                                  f"{', '.join(sorted(names))[:200]})")
            _check_members(z, names, Path(path).stat().st_size)
            meta = _read_meta(z)
            _check_meta(meta, names)
            dest.mkdir(parents=True, exist_ok=True)
            for member in MEMBERS:
                if member in names:
                    with z.open(member) as src, open(dest / member, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                        dst.flush()
                        os.fsync(dst.fileno())
        fsync_dir(dest)
        _check_arrays(dest, meta)
    except BundleError:
        raise
    except OSError as e:
        raise BundleError(f"cannot store the bundle: {e.strerror or e}") from None
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, zlib.error, EOFError,
            NotImplementedError, RuntimeError) as e:
        raise BundleError(f"not a readable edgeq bundle ({type(e).__name__}: "
                          f"{str(e)[:200]})") from None
    model_sha = hashlib.sha256((dest / MODEL).read_bytes()).hexdigest()
    if model_sha != meta["model"]["sha256"]:
        raise BundleError(f"model.tflite sha256 {model_sha[:12]}... does not match bundle.json "
                          f"{meta['model']['sha256'][:12]}...")
    return Bundle(dest, meta)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries durable (after creating or renaming files in it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_members(z: zipfile.ZipFile, names: set[str], size: int) -> None:
    for member in MEMBERS:
        if member in names and z.getinfo(member).compress_type not in _COMPRESSION:
            raise BundleError(f"{member}: compression method {z.getinfo(member).compress_type} "
                              "(bundles are stored; deflate is accepted)")
    expanded = sum(z.getinfo(m).file_size for m in MEMBERS if m in names)
    if expanded > 4 * size + 2**20:
        raise BundleError(f"bundle expands to {expanded:,} bytes, far more than its own size; "
                          "edgeq bundles are stored, not compressed")
    if z.getinfo(META).file_size > MAX_META_BYTES:
        raise BundleError(f"{META} is {z.getinfo(META).file_size:,} bytes (max {MAX_META_BYTES:,})")


def _read_meta(z: zipfile.ZipFile) -> dict[str, Any]:
    try:
        return decode(z.read(META), META, MAX_META_BYTES)
    except ProtocolError as e:
        raise BundleError(str(e)) from None


def _check_meta(meta: dict[str, Any], names: set[str]) -> None:
    """bundle.json field by field (every field the agent later reads)."""
    if meta.get("format") != FORMAT:
        raise BundleError(f"{META}: format is not '{FORMAT}'")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{META}: schema_version {meta.get('schema_version')!r}; this agent "
                          f"reads {SCHEMA_VERSION}")
    _need(isinstance(meta.get("name"), str) and _NAME.match(meta["name"]), "name",
          "1-128 of A-Z a-z 0-9 _ . + -")
    model = _obj(meta, "model")
    _need(model.get("file") == MODEL, "model.file", f"'{MODEL}'")
    _need(_int(model.get("bytes"), 1, 2**31), "model.bytes", "a positive integer")
    _need(isinstance(model.get("sha256"), str) and SHA256_HEX.match(model["sha256"]),
          "model.sha256", "64 hex digits")
    io_ = _obj(meta, "io")
    specs = {side: _specs(io_, side) for side in ("inputs", "outputs")}
    _contracts(meta, [s["name"] for s in specs["inputs"]])
    for key, member in (("eval", EVAL), ("reference", REFERENCE)):
        part = meta.get(key)
        if part is None:
            continue
        _need(isinstance(part, dict) and part.get("file") == member, f"{key}.file", f"'{member}'")
        _need(_int(part.get("samples"), 1, 10**7), f"{key}.samples", "1..10^7")
        if member not in names:
            raise BundleError(f"{META} describes {member} but the bundle lacks it")
    labels = (meta.get("eval") or {}).get("labels")
    _need(labels in (None, "class", "target"), "eval.labels", "null, 'class' or 'target'")


def _need(ok: Any, field: str, expected: str) -> None:
    if not ok:
        raise BundleError(f"{META}: '{field}' must be {expected}")


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"{META}: '{key}' must be an object")
    return value


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _specs(io_: dict[str, Any], side: str) -> list[dict[str, Any]]:
    specs = io_.get(side)
    if not isinstance(specs, list) or not 1 <= len(specs) <= 64:
        raise BundleError(f"{META}: 'io.{side}' must be a list of 1-64 tensors")
    for k, spec in enumerate(specs):
        where = f"io.{side}[{k}]"
        _need(isinstance(spec, dict), where, "an object")
        _need(isinstance(spec.get("name"), str) and len(spec["name"]) <= 256, f"{where}.name",
              "a string")
        shape = spec.get("shape")
        _need(isinstance(shape, list) and len(shape) <= 8 and all(_int(d, 0, 2**31) for d in shape),
              f"{where}.shape", "at most 8 dimensions of 0..2^31")
        _need(spec.get("dtype") in DTYPES, f"{where}.dtype", f"one of {', '.join(sorted(DTYPES))}")
        scale = spec.get("scale")
        _need(isinstance(scale, (int, float)) and not isinstance(scale, bool)
              and math.isfinite(scale) and scale >= 0, f"{where}.scale", "a finite number >= 0")
        _need(_int(spec.get("zero_point"), -2**31, 2**31), f"{where}.zero_point", "an integer")
    return specs


def _contracts(meta: dict[str, Any], input_names: list[str]) -> None:
    contracts = meta.get("preprocessing") or []
    if not isinstance(contracts, list) or len(contracts) > 64:
        raise BundleError(f"{META}: 'preprocessing' must be a list of at most 64 contracts")
    for k, c in enumerate(contracts):
        try:
            contract = Contract.from_dict(c)
        except Exception as e:
            raise BundleError(f"{META}: preprocessing[{k}] is not a contract ({e})") from None
        _need(contract.input in input_names, f"preprocessing[{k}].input", "a model input name")


def _check_arrays(dest: Path, meta: dict[str, Any]) -> None:
    """Array headers inside eval.npz / reference.npz: expected keys, numeric dtypes, sample
    counts as described, and sizes bounded before a single array is loaded."""
    n_in, n_out = len(meta["io"]["inputs"]), len(meta["io"]["outputs"])
    for key, member, keys in (("eval", EVAL, [f"in_{i}" for i in range(n_in)]),
                              ("reference", REFERENCE, [f"out_{i}" for i in range(n_out)])):
        part = meta.get(key)
        if part is None:
            continue
        headers = _npz_headers(dest / member)
        for name in keys + (["y"] if key == "eval" and "y" in headers else []):
            if name not in headers:
                raise BundleError(f"{member} lacks array '{name}'")
            shape, _ = headers[name]
            if not shape or shape[0] != part["samples"]:
                raise BundleError(f"{member}: '{name}' has shape {shape}; {META} says "
                                  f"{part['samples']} samples")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    headers = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.compress_type not in _COMPRESSION or info.file_size > MAX_ARRAY_BYTES:
                raise BundleError(f"{path.name}: member {info.filename[:64]!r} is "
                                  f"{info.file_size:,} bytes or compressed with method "
                                  f"{info.compress_type} (max {MAX_ARRAY_BYTES:,}, stored/deflate)")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = reader(f)
            if dtype.hasobject or dtype.name not in DTYPES | {"float64"}:
                raise BundleError(f"{path.name}: '{info.filename}' has dtype {dtype}")
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_ARRAY_BYTES:
                raise BundleError(f"{path.name}: '{info.filename}' shape {shape} is over "
                                  f"{MAX_ARRAY_BYTES:,} bytes")
            headers[info.filename.removesuffix(".npy")] = (tuple(shape), dtype)
    return headers
