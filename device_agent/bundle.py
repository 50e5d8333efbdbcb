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
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .preprocessing import Contract
from .runtimes import TensorSpec

FORMAT = "edgeq-bundle"
SCHEMA_VERSION = 1
META, MODEL, EVAL, REFERENCE = "bundle.json", "model.tflite", "eval.npz", "reference.npz"
MEMBERS = (META, MODEL, EVAL, REFERENCE)


class BundleError(ValueError):
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
        meta["eval"] = {"file": EVAL, "samples": int(len(eval_inputs[0])),
                        "labels": None if y is None else
                        ("class" if np.issubdtype(np.asarray(y).dtype, np.integer) else "target")}
    if reference is not None:
        members[REFERENCE] = _npz_bytes({f"out_{i}": r for i, r in enumerate(reference)})
        meta["reference"] = {"file": REFERENCE, "samples": int(len(reference[0]))}
    members[META] = (json.dumps(meta, indent=1) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for member in MEMBERS:
            if member in members:
                z.writestr(member, members[member])
    return meta


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
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
    """Check a (signature-verified) bundle file and extract its known members into `dest`."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if META not in names or MODEL not in names:
                raise BundleError(f"bundle lacks {META} or {MODEL} (has: {', '.join(sorted(names))})")
            meta = json.loads(z.read(META))
            _check_meta(meta, names)
            expanded = sum(z.getinfo(m).file_size for m in MEMBERS if m in names)
            if expanded > 4 * Path(path).stat().st_size + 2**20:
                raise BundleError(f"bundle expands to {expanded:,} bytes, far more than its own "
                                  "size; edgeq bundles are stored, not compressed")
            dest.mkdir(parents=True, exist_ok=True)
            for member in MEMBERS:
                if member in names:
                    with z.open(member) as src, open(dest / member, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except BundleError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError) as e:
        raise BundleError(f"not a readable edgeq bundle ({e})") from e
    model_sha = hashlib.sha256((dest / MODEL).read_bytes()).hexdigest()
    if model_sha != meta["model"]["sha256"]:
        raise BundleError(f"model.tflite sha256 {model_sha[:12]}... does not match bundle.json "
                          f"{meta['model']['sha256'][:12]}...")
    return Bundle(dest, meta)


def _check_meta(meta: Any, names: set[str]) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{META}: format is not '{FORMAT}'")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{META}: schema_version {meta.get('schema_version')!r}; this agent "
                          f"reads {SCHEMA_VERSION}")
    for key, member in (("eval", EVAL), ("reference", REFERENCE)):
        if meta.get(key) and member not in names:
            raise BundleError(f"{META} describes {member} but the bundle lacks it")
