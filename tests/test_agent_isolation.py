"""The device agent must never import TensorFlow or the host package."""

from __future__ import annotations

import subprocess
import sys


def test_device_agent_imports_without_tensorflow_or_edgeq() -> None:
    code = ("import sys, device_agent.runtimes, device_agent.tflm_child; "
            "bad = [m for m in ('tensorflow', 'keras', 'edgeq', 'litert_quantizer') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
