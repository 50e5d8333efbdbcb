"""Capture what TensorFlow and litert-quantizer print, so logs and --json stay clean."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger("edgeq")


# fd 1 and 2 belong to the whole process: two threads capturing at once would swap each
# other's descriptors, so captures take turns (re-entrant: a capture may nest).
_LOCK = threading.RLock()


@contextlib.contextmanager
def captured_output(label: str) -> Iterator[None]:
    """Redirect fd 1 and 2 (Python and C++ writers alike) into a temp file for the block.

    The captured text goes to the debug log under `label`, so `-v` still shows it.
    """
    with _LOCK:
        yield from _captured(label)


def _captured(label: str) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    handlers_before = list(logging.root.handlers)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        text_sink = open(sink.fileno(), "w", closefd=False)  # noqa: SIM115
        try:
            # Python-level writers too, for when sys.stdout is not fd 1 (pytest, notebooks)
            with contextlib.redirect_stdout(text_sink), contextlib.redirect_stderr(text_sink):
                yield
        finally:
            _drop_handlers_bound_to(text_sink, handlers_before)
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


def _drop_handlers_bound_to(sink: object, before: list[logging.Handler]) -> None:
    """A library that calls logging.basicConfig() inside the block (Keras' model loading does)
    binds the root logger to the temporary sink; once it is closed every log call would fail
    with 'Bad file descriptor'. Such handlers go when the block ends."""
    for handler in list(logging.root.handlers):
        if handler not in before and getattr(handler, "stream", None) is sink:
            logging.root.removeHandler(handler)
