"""Equivalent topology: rewrites are proved equal on float outputs and unblock precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import bundled, run_cli

from device_agent.preprocessing import Contract
from edgeq.convert import ConvertConfig, convert
from edgeq.errors import InputError, ModelError
from edgeq.model import rewrite as rewrite_module
from edgeq.model.data import load_dataset
from edgeq.model.graph import read_ops
from edgeq.model.load import load_model
from edgeq.model.rewrite import parse_rewrites, rewrite


def _loaded(name: str):
    model_path, calib_path, _ = bundled(name)
    model = load_model(model_path)
    return model, load_dataset(calib_path, model.inputs)


def test_layernorm_ops_are_replaced_by_equivalent_int16_capable_ops() -> None:
    model, calib = _loaded("digits_attention")
    done = rewrite(model, ("neg", "squared-difference"), calib)
    types = [op.op for op in read_ops(done.model.tflite)]
    assert "NEG" not in types and "SQUARED_DIFFERENCE" not in types
    assert types.count("SUB") == 2 and len(done.applied) == 4
    assert done.max_abs_diff <= 1e-6


def test_rewritten_attention_runs_entirely_in_int16_on_litert_and_tflm() -> None:
    model, calib, evald = bundled("digits_attention")
    result = convert(ConvertConfig(model, None, calib, evald, mode="int16x8", rewrites=("all",),
                                   show_progress=False))
    summary = result.report.to_dict()["summary"]
    assert summary["integer_coverage_pct"] == 100.0
    assert summary["int16_ops"] == summary["ops"]
    assert result.report.to_dict()["tflm"]["runs"]
    assert result.report.to_dict()["rewrites"]["float_max_abs_diff"] <= 1e-6


def test_preprocessing_moves_out_and_int8_stops_collapsing(tmp_path) -> None:
    model, calib, evald = bundled("wine_collapse")
    plain = convert(ConvertConfig(model, None, calib, evald, show_progress=False)).report.metrics
    out = tmp_path / "out"
    moved = convert(ConvertConfig(model, out, calib, evald, rewrites=("preprocessing",),
                                  show_progress=False)).report.metrics
    float_acc = plain["float_task"]["value"]
    assert plain["task"]["value"] < float_acc - 0.2  # int8 collapses on raw inputs
    assert moved["task"]["value"] >= float_acc - 0.01  # within 1 point of float
    contract = json.loads((out / "preprocessing.json").read_text())["inputs"][0]
    assert contract["input"] == "x" and [s["op"] for s in contract["steps"]] == ["sub", "mul"]
    assert json.loads((out / "plan.json").read_text())["rewrites"] == ["preprocessing"]


def test_contract_applied_on_the_host_matches_the_in_model_preprocessing() -> None:
    model, calib = _loaded("wine_collapse")
    done = rewrite(model, ("preprocessing",), calib)
    contract = done.contracts[0]
    again = Contract.from_dict(contract.to_dict())
    x = calib.inputs[0][:5]
    np.testing.assert_array_equal(again.apply(x), contract.apply(x))
    assert contract.formula() == "((x - c0) * c1)"


def test_a_plan_carries_its_rewrites_into_convert(tmp_path, capsys) -> None:
    model, calib, evald = bundled("wine_collapse")
    first = tmp_path / "first"
    convert(ConvertConfig(model, first, calib, evald, rewrites=("preprocessing",),
                          show_progress=False))
    code, out, err = run_cli(["convert", str(model), "-o", str(tmp_path / "again"), "--calib",
                              str(calib), "--eval", str(evald), "--plan", str(first / "plan.json"),
                              "--json"], capsys)
    assert code == 0, err
    assert [a["rewrite"] for a in json.loads(out)["rewrites"]["applied"]] == ["preprocessing"]


def test_nothing_to_rewrite_leaves_the_model_unchanged() -> None:
    model, calib = _loaded("digits_cnn")
    assert rewrite(model, ("preprocessing", "neg"), calib).model.tflite == model.tflite


def test_a_rewrite_that_changes_float_outputs_is_refused(monkeypatch) -> None:
    model, calib = _loaded("digits_attention")
    monkeypatch.setattr(rewrite_module, "EQUALITY_TOLERANCE", -1.0)
    with pytest.raises(ModelError, match="changed the float outputs"):
        rewrite(model, ("neg",), calib)


def test_rewrite_names_are_checked() -> None:
    assert parse_rewrites(["all"]) == rewrite_module.REWRITES
    assert parse_rewrites(["squared-difference,neg"]) == ("neg", "squared-difference")
    with pytest.raises(InputError, match="unknown rewrite 'fold'"):
        parse_rewrites(["fold"])
