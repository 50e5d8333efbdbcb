"""eval.npz labels checked against the model's output: one-hot rows, out-of-range classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import bundled, run_cli

from device_agent.runtimes import TensorSpec
from edgeq.errors import InputError
from edgeq.model.data import Dataset, labels_for

OUT10 = TensorSpec("logits", (1, 10), "float32")


def _data(y: np.ndarray) -> Dataset:
    return Dataset((np.zeros((len(y), 3), np.float32),), y, "eval.npz")


@pytest.mark.unit
def test_one_hot_float_rows_become_class_indices() -> None:
    y = np.eye(10, dtype=np.float32)[[3, 1, 9]]
    assert labels_for(_data(y), OUT10).y.tolist() == [3, 1, 9]


@pytest.mark.unit
def test_float_targets_that_are_not_one_hot_stay_regression() -> None:
    y = np.array([[0.5] * 10, [0.1] * 10], np.float32)
    assert labels_for(_data(y), OUT10).y.dtype == np.float32


@pytest.mark.unit
# columns: labels, words the error must contain
@pytest.mark.parametrize("y,words", [(np.array([0, 10]), "0..10"), (np.array([-1, 2]), "-1..2")])
def test_labels_outside_the_output_are_refused(y: np.ndarray, words: str) -> None:
    with pytest.raises(InputError, match=r"must lie in 0..9") as e:
        labels_for(_data(y), OUT10)
    assert words in str(e.value)


def test_cli_exit_2_for_out_of_range_labels_and_scores_one_hot(tmp_path: Path, capsys) -> None:
    model, calib, evalf = bundled("digits_cnn")
    with np.load(evalf) as d:
        x, y = d["x"], d["y"]
    np.savez(tmp_path / "bad.npz", x=x, y=y + 5)
    code, _, err = run_cli(["convert", str(model), "--calib", str(calib), "--eval",
                            str(tmp_path / "bad.npz"), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "must lie in 0..9" in err and not (tmp_path / "o").exists()
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(10, dtype=np.float32)[y])
    code, out, _ = run_cli(["convert", str(model), "--calib", str(calib), "--eval",
                            str(tmp_path / "onehot.npz"), "-o", str(tmp_path / "o")], capsys)
    assert code == 0 and "accuracy" in out and "rmse" not in out.lower()
