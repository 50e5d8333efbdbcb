"""Plans are data keyed by op fingerprints; a stale entry is named, never silently dropped."""

from __future__ import annotations

import pytest
from conftest import bundled, save_mlp

from edgeq.errors import InputError, PlanError
from edgeq.model.graph import read_ops
from edgeq.model.load import load_model
from edgeq.quant.plan import Plan, check_plan, plan_indices


@pytest.fixture(scope="module")
def attention_ops():
    return read_ops(load_model(bundled("digits_attention")[0]).tflite)


def test_plan_round_trips_through_json(attention_ops) -> None:
    softmax = [op for op in attention_ops if op.op == "SOFTMAX"]
    plan = Plan.for_ops(attention_ops, softmax, {"sqnr_db": 30.0})
    again = Plan.from_dict(plan.to_dict())
    assert again == plan
    assert plan_indices(again, attention_ops, "p") == {softmax[0].index}


def test_fingerprints_are_stable_across_loads(attention_ops) -> None:
    again = read_ops(load_model(bundled("digits_attention")[0]).tflite)
    assert [o.fingerprint for o in again] == [o.fingerprint for o in attention_ops]


def test_stale_entry_is_listed(attention_ops) -> None:
    cnn_ops = read_ops(load_model(bundled("digits_cnn")[0]).tflite)
    plan = Plan.for_ops(attention_ops, [op for op in attention_ops if op.op == "SOFTMAX"])
    result = check_plan(plan, cnn_ops)
    assert not result.ok and "SOFTMAX" in result.describe()
    with pytest.raises(PlanError, match="1 of 1 int16 entries stale"):
        plan_indices(plan, cnn_ops, "plan.json")


def test_not_a_plan_is_rejected() -> None:
    with pytest.raises(InputError, match="not an edgeq plan"):
        Plan.from_dict({"format": "other"})


@pytest.fixture(scope="module")
def mlp_plan(tmp_path_factory):
    """A plan with the softmax in int16, made for the original MLP."""
    root = tmp_path_factory.mktemp("mlp")
    ops = read_ops(load_model(save_mlp(root / "v1.keras")).tflite)
    plan = Plan.for_ops(ops, [op for op in ops if op.op == "SOFTMAX"])
    path = root / "plan.json"
    path.write_text(__import__("json").dumps(plan.to_dict()))
    return root, path


# columns: variant of the model, expected exit code, words the report must contain
PLAN_CHECK_CASES = [
    ("same model re-exported", {}, 0, ["all 1 int16 entries match"]),
    ("renamed head layer", {"head_name": "classifier"}, 1, ["renamed FULLY_CONNECTED", "classifier"]),
    ("added layer", {"extra_layer": True}, 1, ["new FULLY_CONNECTED", "extra"]),
]


@pytest.mark.parametrize("case,variant,code,words", PLAN_CHECK_CASES, ids=[c[0] for c in PLAN_CHECK_CASES])
def test_plan_check_cli(case, variant, code, words, mlp_plan, capsys) -> None:
    from test_cli import run_cli

    root, plan_path = mlp_plan
    model = save_mlp(root / f"{case.replace(' ', '_')}.keras", **variant)
    got, out, err = run_cli(["plan", "check", str(model), str(plan_path)], capsys)
    assert got == code, out + err
    for word in words:
        assert word in out, out
