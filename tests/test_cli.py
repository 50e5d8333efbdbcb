"""The CLI as a user sees it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import bundled, run_cli


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    """Files for the bad-input table."""
    rng = np.random.default_rng(0)
    good = rng.random((4, 8, 8, 1), dtype=np.float32)
    not_model = tmp_path / "notes.keras"
    not_model.write_text("not a model")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    plan_other = tmp_path / "plan_other.json"
    plan_other.write_text(json.dumps({"format": "edgeq-plan", "schema_version": 1,
                                      "model_fingerprint": "0", "default": "int8", "int16": [
                                          {"op": "SOFTMAX", "name": "other/Softmax",
                                           "fingerprint": "deadbeefdeadbeef"}]}))
    return {
        "not_model": not_model,
        "corrupt": corrupt,
        "missing_key": _npz(tmp_path / "missing_key.npz", pixels=good),
        "wrong_shape": _npz(tmp_path / "wrong_shape.npz", x=rng.random((4, 8, 8))),
        "wrong_dtype": _npz(tmp_path / "wrong_dtype.npz", x=np.full((4, 8, 8, 1), "a")),
        "zero": _npz(tmp_path / "zero.npz", x=np.zeros((0, 8, 8, 1), np.float32)),
        "bad_labels": _npz(tmp_path / "bad_labels.npz", x=good, y=np.arange(3)),
        "plan_other": plan_other,
    }


CNN, CALIB, EVAL = bundled("digits_cnn")

# columns: case id, argv builder (files -> args after OUT), words the one-line error must contain
BAD_INPUT_CASES = [
    ("missing model", lambda f: ["nope.keras", "--calib", str(CALIB)], ["not found", "nope.keras"]),
    ("not a model", lambda f: [str(f["not_model"]), "--calib", str(CALIB)],
     ["not a Keras .keras model", "zip archive"]),
    ("corrupt tflite", lambda f: [str(f["corrupt"]), "--calib", str(CALIB)], ["corrupt.tflite"]),
    ("missing calib", lambda f: [str(CNN), "--calib", "nope.npz"], ["not found", "nope.npz"]),
    ("calib missing key", lambda f: [str(CNN), "--calib", str(f["missing_key"])],
     ["no array for model input 'x'", "pixels"]),
    ("calib wrong shape", lambda f: [str(CNN), "--calib", str(f["wrong_shape"])],
     ["shape (4, 8, 8)", "(N, 8, 8, 1)"]),
    ("calib wrong dtype", lambda f: [str(CNN), "--calib", str(f["wrong_dtype"])], ["dtype <U1"]),
    ("calib zero samples", lambda f: [str(CNN), "--calib", str(f["zero"])], ["zero samples"]),
    ("eval labels wrong length", lambda f: [str(CNN), "--calib", str(CALIB), "--eval",
                                            str(f["bad_labels"])], ["3 labels", "4 samples"]),
    ("unknown op type", lambda f: [str(CNN), "--calib", str(CALIB), "--int16", "SOFTMAXX"],
     ["no SOFTMAXX op", "CONV_2D"]),
    ("regex matching nothing", lambda f: [str(CNN), "--calib", str(CALIB), "--int16", "attn/.*"],
     ["matches no op"]),
    ("plan for another model", lambda f: [str(CNN), "--calib", str(CALIB), "--plan",
                                          str(f["plan_other"])], ["does not match", "SOFTMAX"]),
    ("bad calibration method", lambda f: [str(CNN), "--calib", str(CALIB), "--calibration",
                                          "median"], ["percentile:P"]),
    ("unknown rewrite", lambda f: [str(CNN), "--calib", str(CALIB), "--rewrite", "fold"],
     ["unknown rewrite 'fold'", "preprocessing"]),
]


# analyze shares loading, data checks and rewrites with convert (not --int16 / --plan)
CONVERT_ONLY = ("unknown op type", "regex matching nothing", "plan for another model")
BAD_INPUT_RUNS = [("convert", *c) for c in BAD_INPUT_CASES] + [
    ("analyze", *c) for c in BAD_INPUT_CASES if c[0] not in CONVERT_ONLY]


@pytest.mark.parametrize("command,case,argv,words", BAD_INPUT_RUNS,
                         ids=[f"{r[0]}: {r[1]}" for r in BAD_INPUT_RUNS])
def test_bad_input_is_one_line_exit_2_and_no_output(command, case, argv, words, bad_inputs,
                                                     tmp_path, capsys) -> None:
    out_dir = tmp_path / "OUT"
    code, out, err = run_cli([command, *argv(bad_inputs), "-o", str(out_dir)], capsys)
    assert code == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".OUT")]


def test_json_output_is_the_report(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(["convert", str(CNN), "--calib", str(CALIB), "--eval", str(EVAL),
                            "-o", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report == json.loads((tmp_path / "o" / "report.json").read_text())


def test_summary_shows_types_size_and_metrics(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(["convert", str(CNN), "--calib", str(CALIB), "--eval", str(EVAL),
                            "-o", str(tmp_path / "o")], capsys)
    assert code == 0
    for word in ("CONV_2D", "integer ops", "bytes", "SQNR", "accuracy", "TFLite Micro  runs"):
        assert word in out


def test_strict_exits_1_and_names_float_ops(tmp_path: Path, capsys) -> None:
    model, calib, _ = bundled("digits_attention")
    code, out, _ = run_cli(["convert", str(model), "--calib", str(calib), "-o",
                            str(tmp_path / "o"), "--strict", "--no-rewrite", "--json"], capsys)
    assert code == 1
    problems = json.loads(out)["strict"]["problems"]
    assert problems and all("NEG" in p for p in problems)


def test_strict_passes_on_fully_integer_model(tmp_path: Path, capsys) -> None:
    code, _, _ = run_cli(["convert", str(CNN), "--calib", str(CALIB), "-o", str(tmp_path / "o"),
                          "--strict"], capsys)
    assert code == 0


def test_existing_output_is_replaced_only_on_success(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "o"
    assert run_cli(["convert", str(CNN), "--calib", str(CALIB), "-o", str(out_dir)], capsys)[0] == 0
    before = (out_dir / "model.tflite").read_bytes()
    code, _, _ = run_cli(["convert", str(CNN), "--calib", "nope.npz", "-o", str(out_dir)], capsys)
    assert code == 2 and (out_dir / "model.tflite").read_bytes() == before


def test_help_lists_options(capsys) -> None:
    code, out, _ = run_cli(["convert", "--help"], capsys)
    assert code == 0
    for option in ("--calib", "--eval", "--mode", "--int16", "--plan", "--strict", "--json"):
        assert option in out


def test_strict_fails_when_tflm_differs_beyond_tolerance(tmp_path: Path, capsys) -> None:
    model, calib, _ = bundled("digits_attention")  # int8 TFLM vs LiteRT: 1-2 LSB
    code, out, _ = run_cli(["convert", str(model), "--calib", str(calib), "-o", str(tmp_path / "o"),
                            "--strict", "--tolerance", "0", "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and not report["tflm"]["within_tolerance"]
    problem = next(p for p in report["strict"]["problems"] if "TFLite Micro differs" in p)
    where = report["tflm"]["first_divergence"]
    assert f"first at op {where['op_index']} {where['op']}" in problem


def test_mixed_needs_ops_and_reports_its_boundaries(tmp_path: Path, capsys) -> None:
    model, calib, _ = bundled("digits_attention")
    code, _, err = run_cli(["convert", str(model), "--calib", str(calib), "-o", str(tmp_path / "a"),
                            "--mode", "mixed"], capsys)
    assert code == 2 and "--mode mixed needs" in err and not (tmp_path / "a").exists()
    code, out, _ = run_cli(["convert", str(model), "--calib", str(calib), "-o", str(tmp_path / "b"),
                            "--int16", "SOFTMAX", "--int16", "ADD", "--json"], capsys)
    versus = json.loads(out)["mixed_vs_int16x8"]
    assert code == 0 and versus["requantize_ops"] > 0
    assert versus["int16x8_bytes"] > 0 and len(versus["latency_ms"]) == 3
    assert versus["loses"] == ("use --mode int16x8" in versus["text"])
