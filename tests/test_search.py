"""search: frontier, constraints, run budget, plans that convert reproduces, --reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import bundled, run_cli, save_mlp

from edgeq.study.measure import Metric, Point
from edgeq.study.pareto import dominates, frontier
from edgeq.study.search import Constraint, choose


def _point(label: str, score: float, size: int, ms: float = 1.0, int16: int = 0) -> Point:
    return Point(label, frozenset(range(int16)), "int8", score, score, score, size, ms, int16, 0, 0)


@pytest.mark.unit
def test_frontier_is_exactly_the_non_dominated_points() -> None:
    pts = [_point("a", 30, 100), _point("b", 35, 120), _point("c", 33, 130), _point("d", 40, 150),
           _point("e", 40, 160), _point("f", 29, 90)]
    front = frontier(pts, "bytes")
    assert [p.label for p in front] == ["f", "a", "b", "d"]
    for p in pts:
        assert (p in front) != any(dominates(q, p, "bytes") for q in pts)


@pytest.mark.unit
def test_choose_smallest_within_drop_or_best_under_cap() -> None:
    pts = [_point("int8", 30, 100), _point("mid", 39.5, 110), _point("int16", 40, 150)]
    ref, metric = pts[2], Metric("sqnr_db")
    assert choose(pts, Constraint(), ref, metric).chosen.label == "mid"  # default: 1 dB
    assert choose(pts, Constraint("max_drop", 0.1), ref, metric).chosen.label == "int16"
    assert choose(pts, Constraint("max_bytes", 105), ref, metric).chosen.label == "int8"
    none = choose(pts, Constraint("max_bytes", 50), ref, metric)
    assert not none.met and none.best.label == "int8"


def _search(args: list[str], capsys) -> tuple[int, dict, str]:
    code, out, err = run_cli(["search", *args, "--json"], capsys)
    return code, (json.loads(out) if out.strip().startswith("{") else {}), err


def test_search_writes_frontier_plan_and_model_within_budget(tmp_path, capsys) -> None:
    model, calib, evald = bundled("digits_outlier_mlp")
    out = tmp_path / "out"
    code, report, err = _search([str(model), "-o", str(out), "--calib", str(calib), "--eval",
                                 str(evald), "--metric", "sqnr"], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"pareto.json", "pareto.csv", "pareto.png",
                                               "sensitivity.json", "plan.json", "model.tflite",
                                               ".edgeq-output.json"}
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 3N+2, plus all-int8 and the first choice under each other range setting (labelled so;
    # --calibration auto went on with the setting whose all-int8 scored best)
    moves = [p for p in report["points"]
             if p["label"].endswith(("[minmax]", "[percentile:99.99]", "[mse]"))]
    assert 2 <= len(moves) <= 4
    int8_moves = [p for p in moves if p["label"].startswith("all-int8 [")]
    assert len(int8_moves) == 2 and all(p["score"] <= report["endpoints"]["all_int8"]["score"]
                                        for p in int8_moves)
    assert report["runs"] <= 3 * report["candidates"] + 2 + len(moves) == report["run_budget"]
    points = {p["label"]: p for p in report["points"]}
    front = [points[label] for label in report["frontier"]["bytes"]]
    for p in front:  # nothing measured dominates a frontier point
        assert not any(q["score"] >= p["score"] and q["bytes"] <= p["bytes"] and
                       (q["score"] > p["score"] or q["bytes"] < p["bytes"]) for q in points.values())
    chosen, ref = report["chosen"], report["endpoints"]["all_int16x8"]
    assert chosen["score"] >= ref["score"] - 1.0  # default constraint: within 1 dB
    assert chosen["score"] > report["endpoints"]["all_int8"]["score"] + 6
    assert len((out / "pareto.csv").read_text().splitlines()) == len(report["points"]) + 1

    # the plan reproduces the chosen point through `edgeq convert --plan` on the eval data
    code, out2, err = run_cli(["convert", str(model), "-o", str(tmp_path / "conv"), "--calib",
                               str(calib), "--eval", str(evald), "--plan", str(out / "plan.json"),
                               "--json"], capsys)
    assert code == 0, err
    converted = json.loads(out2)
    assert converted["metrics"]["sqnr_db"] >= ref["score"] - 1.0
    assert (tmp_path / "conv" / "model.tflite").read_bytes() == (out / "model.tflite").read_bytes()


def _report(points: list, choice) -> object:
    from edgeq.model.load import load_model
    from edgeq.model.rewrite import Rewritten
    from edgeq.study.analyze import Verdict
    from edgeq.study.search import SearchReport

    rewritten = Rewritten(load_model(bundled("digits_cnn")[0]))
    return SearchReport("m.keras", Metric("sqnr_db"), None, "eval.npz", 1, Constraint(), choice,
                        points[0], points[1], Verdict("spread", "-"), tuple(points), 0, 2, 2, None,
                        {"total": 0.1}, (), rewritten)


def test_a_slow_choice_names_the_best_plan_within_twice_int8_latency() -> None:
    pts = [_point("all-int8", 10, 100, ms=1.0), _point("all-int16x8", 30, 150, ms=50.0),
           _point("+matmul", 29.5, 101, ms=48.0), _point("+stream", 27, 101, ms=1.3)]
    choice = choose(pts, Constraint(), pts[1], Metric("sqnr_db"))  # within 1 dB, smallest
    report = _report(pts, choice)
    assert choice.chosen.label == "+matmul" and report.faster.label == "+stream"
    assert "within 2x, +stream reaches 27.00 dB at 1.30x" in report.faster_text()
    fast_choice = choose(pts, Constraint("max_drop", 3.5, "latency_ms"), pts[1], Metric("sqnr_db"))
    assert fast_choice.chosen.label == "+stream" and _report(pts, fast_choice).faster is None


@pytest.mark.unit
def test_plans_of_the_same_size_are_chosen_by_latency() -> None:
    # a transformer's plans differ by 0.1% in bytes and by 5x in latency: within 1% of the
    # smallest qualifying size the fastest wins; beyond it, size still decides
    pts = [_point("all-int8", 10, 1000, ms=1.0), _point("all-int16x8", 30, 1500, ms=50.0),
           _point("+layernorm", 29.6, 1002, ms=6.0), _point("+segments", 29.2, 1005, ms=1.6),
           _point("+wide", 29.8, 1200, ms=1.1)]
    choice = choose(pts, Constraint(), pts[1], Metric("sqnr_db"))
    assert choice.chosen.label == "+segments"
    assert "smallest bytes (within 1%: fastest)" in choice.description
    pts[3] = _point("+segments", 29.2, 1013, ms=1.6)  # 1.1% over +layernorm: no longer the same size
    assert choose(pts, Constraint(), pts[1], Metric("sqnr_db")).chosen.label == "+layernorm"


def test_unmet_constraint_names_the_best_point_and_writes_no_plan(tmp_path, capsys) -> None:
    # a cap no plan can meet is refused before any run (test_impossible_caps_...); one that the
    # measured points miss still ends with exit 1, the best point named, and no plan or model
    from edgeq.study.search import SearchResult, search_summary, write_search

    pts = [_point("all-int8", 30, 100), _point("all-int16x8", 40, 150)]
    choice = choose(pts, Constraint("max_bytes", 50), pts[1], Metric("sqnr_db"))
    result = SearchResult(pts, choice, _report(pts, choice), None)
    text = search_summary(result)
    assert result.exit_code == 1 and "no point meets bytes <= 50" in text
    assert "best found: all-int8" in text
    write_search(tmp_path / "out", result)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "pareto.json", "pareto.csv", "pareto.png", ".edgeq-output.json"}


def test_eval_without_y_falls_back_to_sqnr_with_a_notice(tmp_path, capsys, caplog) -> None:
    model, calib, evald = bundled("wine_collapse")
    no_y = tmp_path / "eval_no_y.npz"
    np.savez(no_y, x=np.load(evald)["x"])
    code, report, err = _search([str(model), "-o", str(tmp_path / "o"), "--calib", str(calib),
                                 "--eval", str(no_y)], capsys)
    assert code == 0, err
    assert "has no y" in caplog.text and report["metric"] == "sqnr_db"


def test_two_constraints_are_a_usage_error(tmp_path, capsys) -> None:
    model, calib, evald = bundled("digits_outlier_mlp")
    code, _, err = run_cli(["search", str(model), "-o", str(tmp_path / "o"), "--calib", str(calib),
                            "--eval", str(evald), "--max-drop", "1", "--max-bytes", "9000"], capsys)
    assert code == 2 and "at most one of" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def mlp_v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    rng = np.random.default_rng(0)
    np.savez(root / "calib.npz", x=rng.normal(size=(64, 6)).astype(np.float32))
    np.savez(root / "eval.npz", x=rng.normal(size=(48, 6)).astype(np.float32))
    return root, save_mlp(root / "v1.keras")


def test_reuse_reexamines_only_what_changed(mlp_v1, capsys) -> None:
    root, v1 = mlp_v1
    data = ["--calib", str(root / "calib.npz"), "--eval", str(root / "eval.npz")]
    code, first, err = _search([str(v1), "-o", str(root / "s1"), *data], capsys)
    assert code == 0, err
    v2 = save_mlp(root / "v2.keras", extra_layer=True)
    code, second, err = _search([str(v2), "-o", str(root / "s2"), *data, "--reuse",
                                 str(root / "s1" / "plan.json")], capsys)
    assert code == 0, err
    reuse = second["reuse"]
    assert reuse["changed_ops"] == 1 and any("new FULLY_CONNECTED" in d for d in reuse["drift"])
    assert second["runs"] < first["runs"]


def test_reuse_of_a_plan_for_another_model_lists_the_drift(mlp_v1, capsys) -> None:
    root, _ = mlp_v1
    model, calib, evald = bundled("digits_outlier_mlp")
    code, _, err = run_cli(["search", str(model), "-o", str(root / "x"), "--calib", str(calib),
                            "--eval", str(evald), "--reuse", str(root / "s1" / "plan.json")], capsys)
    assert code == 2 and "made for another model" in err and "removed" in err


# columns: option, value below what all-int8 measures, words of the refusal
@pytest.mark.parametrize("option,value,words", [("--max-bytes", "100", "below the all-int8 model's"),
                                                ("--max-latency-ms", "0.000001", "fastest plan")])
def test_impossible_caps_are_refused_before_any_run(tmp_path, capsys, option: str, value: str,
                                                    words: str) -> None:
    model, calib, evalf = bundled("digits_cnn")
    code, out, err = run_cli(["search", str(model), "--calib", str(calib), "--eval", str(evalf),
                              "-o", str(tmp_path / "o"), option, value], capsys)
    assert code == 2 and words in err and out == "" and not (tmp_path / "o").exists()


def test_summary_has_one_unit_a_legend_and_latency_spread(tmp_path, capsys) -> None:
    model, calib, evalf = bundled("digits_cnn")
    code, out, _ = run_cli(["search", str(model), "--calib", str(calib), "--eval", str(evalf),
                            "-o", str(tmp_path / "o")], capsys)
    assert code == 0
    assert "float 97.78%" in out and "within 0.5 points of the best plan (" in out
    assert "labels:" in out and "+NAME: all-int8 with NAME" in out and "+-" in out
    report = json.loads((tmp_path / "o" / "pareto.json").read_text())
    assert report["legend"] and all(len(p["latency_spread_ms"]) == 2 for p in report["points"])
    assert all(lo <= p["latency_ms"] <= hi for p in report["points"]
               for lo, hi in [p["latency_spread_ms"]])


def test_search_help_renders_percent(capsys) -> None:
    code, out, _ = run_cli(["search", "--help"], capsys)
    assert code == 0 and "1% of RMSE" in out and "%%" not in out


@pytest.mark.parametrize("allow", [False, True])
def test_an_input_changing_rewrite_is_proposed_and_taken_only_when_allowed(tmp_path, capsys,
                                                                          allow: bool) -> None:
    model, calib, evald = bundled("wine_collapse")  # a Normalization layer over raw features
    out = tmp_path / "o"
    code, text, err = run_cli(["search", str(model), "-o", str(out), "--calib", str(calib),
                               "--eval", str(evald)] + (["--allow-input-change"] if allow else []),
                              capsys)
    assert code == 0, err
    report = json.loads((out / "pareto.json").read_text())
    proposal = report["proposals"][0]
    assert proposal["rewrite"] == "preprocessing" and proposal["allowed"] == allow
    moved = max(p["value"] for p in proposal["points"])
    int8 = report["endpoints"]["all_int8"]
    assert moved > int8["value"]  # int8 collapses on raw inputs; with the contract it does not
    assert "proposal: --rewrite preprocessing" in text
    assert report["runs"] <= report["run_budget"]
    if allow:
        assert report["chosen"]["label"].endswith("[+preprocessing]")
        assert json.loads((out / "plan.json").read_text())["rewrites"][-1] == "preprocessing"
        assert (out / "preprocessing.json").exists()
    else:
        assert "[+preprocessing]" not in report["chosen"]["label"]
        assert not (out / "preprocessing.json").exists()
