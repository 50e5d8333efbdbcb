"""Arrays on disk: the one place edgeq writes .npz files (bundles, child-process hand-over)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np


def save_npz(target: Path | IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """np.savez with named arrays (numpy's stubs read **kwargs as its allow_pickle flag)."""
    np.savez(target, **arrays)  # type: ignore[arg-type]
