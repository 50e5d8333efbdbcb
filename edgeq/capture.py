"""Capture what TensorFlow and litert-quantizer print, so logs and --json stay clean."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger("edgeq")


@contextlib.contextmanager
def captured_output(label: str) -> Iterator[None]:
    """Redirect fd 1 and 2 (Python and C++ writers alike) into a temp file for the block.

    The captured text goes to the debug log under `label`, so `-v` still shows it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        text_sink = open(sink.fileno(), "w", closefd=False)  # noqa: SIM115
        try:
            # Python-level writers too, for when sys.stdout is not fd 1 (pytest, notebooks)
            with contextlib.redirect_stdout(text_sink), contextlib.redirect_stderr(text_sink):
                yield
        finally:
            text_sink.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                log.debug("%s printed:\n%s", label, text)
