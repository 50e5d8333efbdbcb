"""A model and its data, ready for quantisation: loaded, rewritten (each rewrite proved equal
on the calibration data), the data put through any preprocessing contract; and the
preprocessing contract's file, preprocessing.json, that travels with a quantised model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.preprocessing import Contract
from edgeq.errors import InputError
from edgeq.model.data import Dataset, labels_for, load_dataset
from edgeq.model.load import FloatModel, load_model
from edgeq.model.rewrite import DEFAULT_REWRITES, Rewritten, parse_rewrites, rewrite


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


def write_contract(directory: Path, contracts: list[Contract]) -> None:
    """DIR/preprocessing.json when preprocessing was moved out of the model."""
    if contracts:
        (directory / "preprocessing.json").write_text(
            json.dumps({"format": "edgeq-preprocessing", "schema_version": 1,
                        "inputs": [c.to_dict() for c in contracts]}, indent=2) + "\n")


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
