"""Child processes that die: a TFLM run or a load check whose interpreter crashes (SIGSEGV, as
a far-too-small TFLM arena does) is reported to the parent, which carries on."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from device_agent import tflm_child
from device_agent.loadcheck import check_in_child
from device_agent.tflm_child import run_tflm


@pytest.fixture()
def segfaulting_python(tmp_path: Path) -> Path:
    """An 'interpreter' that dies of SIGSEGV whatever it is asked to run."""
    script = tmp_path / "python-that-crashes"
    script.write_text("#!/bin/sh\nkill -SEGV $$\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_crashing_tflm_child_is_reported_not_fatal(segfaulting_python: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    cnn_int8: Path) -> None:
    monkeypatch.setattr(tflm_child.sys, "executable", str(segfaulting_python))
    run = run_tflm(cnn_int8.read_bytes(), [[np.zeros((1, 8, 8, 1), np.int8)]], 1 << 20)
    assert not run.ok and "crashed with signal 11" in run.error
    assert os.getpid()  # still here


def test_a_crashing_load_check_is_reported_not_fatal(segfaulting_python: Path,
                                                    tmp_path: Path) -> None:
    check = check_in_child(tmp_path, "litert", python=(str(segfaulting_python),))
    assert not check.ok and "crashed (signal 11)" in check.error


def test_a_real_tflm_arena_far_too_small_fails_cleanly(cnn_int8: Path) -> None:
    """The real interpreter with a 1 KiB arena: an error or a crash, never the parent's."""
    run = run_tflm(cnn_int8.read_bytes(), [[np.zeros((1, 8, 8, 1), np.int8)]], 1024)
    assert not run.ok and run.error
