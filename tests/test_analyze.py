"""analyze: both-way sensitivity, candidates and groups, error attribution, verdicts."""

from __future__ import annotations

import pytest
from conftest import bundled

from edgeq.model.graph import read_ops
from edgeq.model.load import load_model
from edgeq.study.analyze import analyze, build_candidates


@pytest.fixture(scope="module")
def outlier_report():
    model, calib, evald = bundled("digits_outlier_mlp")
    return analyze(model, calib, evald, metric="sqnr", show_progress=False)


def test_every_candidate_is_measured_both_ways(outlier_report) -> None:
    rows = outlier_report["candidates"]
    assert rows and all("upgrade_gain_db" in r and "downgrade_loss_db" in r for r in rows)
    assert outlier_report["runs"] == 2 + 2 * len(rows)
    assert {r["kind"] for r in rows} == {"op", "group"}


def test_outlier_ops_rank_first_although_upgrading_one_alone_is_blind(outlier_report) -> None:
    # The outlier tensor sits between `hidden` and `mix`: either op alone in int16 gains nothing
    # (its neighbour requantises to int8), but downgrading either from int16x8 loses a lot.
    rows = {r["name"]: r for r in outlier_report["candidates"]}
    hidden = next(r for name, r in rows.items() if "hidden" in name and r["kind"] == "op")
    gap = outlier_report["gap_db"]
    assert gap > 6
    assert hidden["upgrade_gain_db"] < 0.25 * gap < hidden["downgrade_loss_db"]
    # Among single ops the two around the outlier rank first (a group holding them, up to the
    # whole model, may rank above them: its rank divides by a cost that includes latency).
    first_op = next(r for r in outlier_report["candidates"] if r["kind"] == "op")
    assert "hidden" in first_op["name"] or "mix" in first_op["name"], first_op["name"]


def test_attribution_covers_inputs_and_every_op(outlier_report) -> None:
    rows = outlier_report["attribution"]
    assert rows[0]["op"] == "INPUT"
    assert len(rows) == 1 + len(read_ops(load_model(bundled("digits_outlier_mlp")[0]).tflite))
    measured = [r for r in rows if r["sqnr_db_int8"] is not None]
    assert sum(r["sqnr_db_int16"] > r["sqnr_db_int8"] for r in measured) >= len(measured) - 1


def test_collapse_is_attributed_to_the_in_model_preprocessing() -> None:
    model, calib, evald = bundled("wine_collapse")
    report = analyze(model, calib, evald, show_progress=False, latency="builtin")
    assert report["metric"] == "accuracy"
    worst = min((r for r in report["attribution"] if r["sqnr_db_int8"] is not None),
                key=lambda r: r["sqnr_db_int8"])
    assert "normalization" in worst["name"] and worst["sqnr_db_int8"] < 10
    # int8 collapses here; whether int16 counts as cheap or the error as concentrated depends
    # on a latency ratio near its threshold on this 1 ms model (CI saw both), so not asserted
    assert report["verdict"]["kind"] != "equal"


def test_equal_model_gets_the_equal_verdict() -> None:
    model, calib, evald = bundled("digits_cnn")
    report = analyze(model, calib, evald, show_progress=False)
    assert report["verdict"]["kind"] == "equal", report["verdict"]


def test_groups_are_layer_scopes_with_several_ops() -> None:
    ops = read_ops(load_model(bundled("digits_attention")[0]).tflite)
    cands = build_candidates(ops, {op.index for op in ops})
    groups = [c for c in cands if c.kind == "group"]
    assert any(c.name.endswith("multi_head_attention_1") for c in groups)
    assert all(2 <= len(c.ops) < len(ops) for c in groups)
    assert len({c.ops for c in groups}) == len(groups)  # no two groups with the same ops
