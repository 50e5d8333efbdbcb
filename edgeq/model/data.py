"""calib.npz / eval.npz: one array per model input (leading axis = samples) and optional `y`."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device_agent.runtimes import TensorSpec
from edgeq.errors import InputError

log = logging.getLogger("edgeq")
LABEL_KEY = "y"


@dataclass(frozen=True)
class Dataset:
    """Validated samples for a model: `inputs[i]` matches model input i; `y` optional."""

    inputs: tuple[np.ndarray, ...]
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.inputs[0])

    def sample(self, k: int) -> list[np.ndarray]:
        """Sample k as a batch-1 array per input."""
        return [x[k : k + 1] for x in self.inputs]

    def head(self, n: int) -> Dataset:
        """The first n samples."""
        y = None if self.y is None else self.y[:n]
        return Dataset(tuple(x[:n] for x in self.inputs), y, self.source)

    @property
    def is_classification(self) -> bool:
        return self.y is not None and np.issubdtype(self.y.dtype, np.integer)


def load_dataset(path: str | Path, inputs: tuple[TensorSpec, ...] | list[TensorSpec],
                 labels: bool = False) -> Dataset:
    """Read and check an .npz against the model's inputs.

    Args:
        path: the .npz file.
        inputs: the float model's input specs (batch 1).
        labels: read `y` too (eval data); it must have one entry per sample.

    Raises:
        InputError: naming the file, key, expected and actual shape or dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path} (expected an .npz with one array per input)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from e
    columns = tuple(_input_array(path, arrays, spec, len(inputs)) for spec in inputs)
    counts = {len(c) for c in columns}
    if 0 in counts:
        raise InputError(f"{path}: zero samples; calibration and evaluation need at least one")
    if len(counts) > 1:
        raise InputError(f"{path}: inputs have different sample counts {sorted(counts)}; "
                         "every array needs the same leading axis")
    y = _labels(path, arrays, len(columns[0])) if labels else None
    return Dataset(columns, y, str(path))


def _input_array(path: Path, arrays: dict[str, np.ndarray], spec: TensorSpec,
                 n_inputs: int) -> np.ndarray:
    keys = [spec.name, spec.name.split(":")[0]] + (["x"] if n_inputs == 1 else [])
    key = next((k for k in keys if k in arrays), None)
    if key is None:
        known = ", ".join(sorted(k for k in arrays if k != LABEL_KEY)) or "none"
        raise InputError(f"{path}: no array for model input '{spec.name}' "
                         f"(expected key '{spec.name}'{' or x' if n_inputs == 1 else ''}; "
                         f"found: {known})")
    arr = arrays[key]
    want = (None, *spec.shape[1:])
    if arr.ndim != len(spec.shape) or tuple(arr.shape[1:]) != tuple(spec.shape[1:]):
        raise InputError(f"{path}: key '{key}' has shape {arr.shape} but model input "
                         f"'{spec.name}' needs (N, {', '.join(map(str, want[1:]))})")
    return _cast(path, key, arr, spec)


def _cast(path: Path, key: str, arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    target = np.dtype(spec.dtype)
    if np.issubdtype(target, np.floating):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"{path}: key '{key}' has dtype {arr.dtype} but model input "
                             f"'{spec.name}' needs numbers ({target})")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: key '{key}' contains NaN or inf values")
        return arr.astype(target)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{path}: key '{key}' has dtype {arr.dtype} but model input "
                         f"'{spec.name}' needs integers ({target})")
    info = np.iinfo(target)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise InputError(f"{path}: key '{key}' has values outside the {target} range")
    return arr.astype(target)


def _labels(path: Path, arrays: dict[str, np.ndarray], n: int) -> np.ndarray | None:
    if LABEL_KEY not in arrays:
        return None
    y = arrays[LABEL_KEY]
    if len(y) != n:
        raise InputError(f"{path}: '{LABEL_KEY}' has {len(y)} labels but the inputs have {n} "
                         "samples; they must match")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise InputError(f"{path}: '{LABEL_KEY}' has dtype {y.dtype}; expected int class labels "
                         "or float regression targets")
    return y


def labels_for(data: Dataset, output: TensorSpec) -> Dataset:
    """Check `y` against the model's first output: one-hot float rows become class indices;
    class labels must lie in 0..C-1 for an output of C scores.

    Raises:
        InputError: naming the label range and the output's class count.
    """
    y = data.y
    if y is None or len(y) == 0:
        return data
    classes = int(np.prod(output.shape[1:])) if len(output.shape) > 1 else 1
    if np.issubdtype(y.dtype, np.floating) and _is_one_hot(y, classes):
        log.info("%s: y holds one-hot rows of %d classes; scoring accuracy on their indices",
                 data.source, classes)
        return Dataset(data.inputs, y.reshape(len(y), -1).argmax(axis=1), data.source)
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim > 1 and int(np.prod(y.shape[1:])) != 1:
            raise InputError(f"{data.source}: integer 'y' has shape {y.shape}; expected one class "
                             "index per sample (N,), or one-hot float rows")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= classes:
            raise InputError(f"{data.source}: labels 'y' span {lo}..{hi} but output "
                             f"'{output.name}' has {classes} class score(s), so labels must lie in "
                             f"0..{classes - 1}; for regression targets store y as float")
    return data


def _is_one_hot(y: np.ndarray, classes: int) -> bool:
    rows = y.reshape(len(y), -1)
    return (classes > 1 and rows.shape[1] == classes and bool(np.all((rows == 0) | (rows == 1)))
            and bool(np.all(rows.sum(axis=1) == 1)))
