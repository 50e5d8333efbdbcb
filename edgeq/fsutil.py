"""Output directories and files that never lose a user's data and are never seen half-written.

An OUT directory is built beside its final place and swapped in whole. edgeq replaces an
existing OUT only when everything in it is edgeq's own earlier output: each OUT carries a
marker (`.edgeq-output.json`) listing the files edgeq wrote, and a directory holding anything
else (a model, a calibration file, notes) is refused before any work starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeq.errors import InputError

MARKER = ".edgeq-output.json"
_TMP_TAG, _OLD_TAG = "edgeq-tmp", "edgeq-old"


def check_output_dir(out: Path) -> Path:
    """Refuse an OUT that edgeq may not replace; returns its absolute path.

    Raises:
        InputError: OUT is a file, the current directory (or holds it), or a directory with
            files edgeq did not write.
    """
    out = Path(out)
    resolved = out.resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory; pass a directory path")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(f"-o {out} is the current directory or contains it; edgeq writes OUT as a "
                         "new directory and swaps it in whole: pass a subdirectory such as -o out")
    if out.is_dir():
        foreign = foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InputError(f"output directory {out} holds files edgeq did not write ({shown}); "
                             "choose a new or empty directory, or move them away")
    return resolved


def foreign_files(out: Path) -> list[str]:
    """Files under `out` (relative paths) that no earlier edgeq run listed in its marker."""
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir() or p.is_symlink())
    try:
        owned = set(json.loads((out / MARKER).read_text())["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        owned = set()
    return [p for p in present if p not in owned]


@contextlib.contextmanager
def atomic_output_dir(out: Path, command: str = "edgeq") -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success it replaces `out` whole, on any error (or
    SIGTERM, which the CLI turns into SystemExit) it is removed and `out` is untouched."""
    from edgeq import __version__

    out = check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_TMP_TAG}-{os.getpid()}-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 is for the temp name, not the result
        yield tmp
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if not p.is_dir())
        (tmp / MARKER).write_text(json.dumps({"format": "edgeq-output", "command": command,
                                              "edgeq_version": __version__, "files": files},
                                             indent=1) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    check_output_dir(out)  # it may have changed while edgeq worked
    old = out.with_name(f".{out.name}.{_OLD_TAG}-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(out: Path) -> None:
    """Temp and old dirs left beside OUT by an edgeq process that was killed (-9, power loss)."""
    for tag in (_TMP_TAG, _OLD_TAG):
        for path in out.parent.glob(f".{out.name}.{tag}-*"):
            pid = path.name.split(f"{tag}-", 1)[1].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file via temp file + rename in the same directory."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
