"""OUT directories: a user's files are never lost, a failed or killed run leaves nothing."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import bundled, run_cli

from edgeq.errors import InputError
from edgeq.fsutil import MARKER, atomic_output_dir, check_output_dir

CNN, CALIB, _ = bundled("digits_cnn")


def _convert(out: str, capsys) -> tuple[int, str, str]:
    return run_cli(["convert", str(CNN), "--calib", str(CALIB), "-o", out], capsys)


def _residue(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "edgeq-tmp" in p.name or "edgeq-old" in p.name]


def test_existing_dir_with_user_files_is_refused_and_kept(tmp_path: Path, capsys) -> None:
    user = tmp_path / "work"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (user / "calib.npz").write_bytes(CALIB.read_bytes())
    code, _, err = _convert(str(user), capsys)
    assert code == 2 and "holds files edgeq did not write" in err and "notes.txt" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in user.iterdir()) == ["calib.npz", "notes.txt"]
    assert (user / "notes.txt").read_text() == "mine" and not _residue(tmp_path)


@pytest.mark.parametrize("spelling", [".", "ABS"])  # -o . and -o "$PWD"
def test_current_directory_is_refused_cleanly(tmp_path: Path, capsys, monkeypatch,
                                              spelling: str) -> None:
    (tmp_path / "model-notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    code, _, err = _convert(str(tmp_path) if spelling == "ABS" else spelling, capsys)
    assert code == 2 and "current directory" in err
    assert [p.name for p in tmp_path.iterdir()] == ["model-notes.txt"]
    assert not _residue(tmp_path.parent)


def test_edgeq_output_is_replaced_but_not_once_a_user_adds_a_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert _convert(str(out), capsys)[0] == 0
    owned = json.loads((out / MARKER).read_text())
    assert owned["command"] == "convert" and "model.tflite" in owned["files"]
    assert _convert(str(out), capsys)[0] == 0  # its own earlier output: replaced
    (out / "my-notes.md").write_text("mine")
    code, _, err = _convert(str(out), capsys)
    assert code == 2 and "my-notes.md" in err and (out / "my-notes.md").exists()


def test_empty_existing_dir_and_file_path(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert _convert(str(tmp_path / "empty"), capsys)[0] == 0
    assert (tmp_path / "empty" / "model.tflite").exists()
    (tmp_path / "afile").write_text("x")
    code, _, err = _convert(str(tmp_path / "afile"), capsys)
    assert code == 2 and "not a directory" in err and (tmp_path / "afile").read_text() == "x"


@pytest.mark.unit
def test_error_or_sigterm_inside_leaves_no_temp_dir(tmp_path: Path) -> None:
    from edgeq.cli.commands import _exit_on_sigterm

    out = tmp_path / "o"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with pytest.raises(SystemExit), atomic_output_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.unit
def test_temp_dirs_of_killed_runs_are_cleaned(tmp_path: Path) -> None:
    dead = tmp_path / ".o.edgeq-tmp-999999999-abc"  # no such pid
    dead.mkdir()
    with atomic_output_dir(tmp_path / "o") as tmp:
        (tmp / "f").write_text("ok")
    assert not dead.exists() and (tmp_path / "o" / "f").read_text() == "ok"


@pytest.mark.unit
def test_written_dirs_follow_the_umask(tmp_path: Path) -> None:
    with atomic_output_dir(tmp_path / "o") as tmp:
        (tmp / "f").write_text("ok")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.unit
def test_check_is_the_same_for_every_command(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        check_output_dir(tmp_path / "d")


# columns: command words before MODEL, extra options
@pytest.mark.parametrize("words,extra", [
    (["analyze"], ["--calib", str(CALIB)]),
    (["search"], ["--calib", str(CALIB), "--eval", str(CALIB)]),
    (["export", "micro"], ["--name", "m"]),
])
def test_every_command_refuses_a_user_dir_before_working(tmp_path: Path, capsys, words: list[str],
                                                        extra: list[str]) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "model.keras").write_bytes(CNN.read_bytes())
    code, out, err = run_cli([*words, str(user / "model.keras"), "-o", str(user), *extra], capsys)
    assert code == 2 and "did not write" in err and out == ""
    assert [p.name for p in user.iterdir()] == ["model.keras"]
