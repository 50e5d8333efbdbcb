"""The device agent must never import TensorFlow or the host package (it installs with
`pip install .[agent]`: ai-edge-litert, numpy, paho-mqtt, cryptography)."""

from __future__ import annotations

import subprocess
import sys


def test_every_device_agent_module_imports_without_tensorflow_or_edgeq() -> None:
    code = ("import importlib, pkgutil, sys, device_agent; "
            "names = [m.name for m in pkgutil.iter_modules(device_agent.__path__, 'device_agent.')]; "
            "[importlib.import_module(n) for n in names if not n.endswith('__main__')]; "
            "bad = [m for m in ('tensorflow', 'keras', 'edgeq', 'litert_quantizer', 'click', "
            "'matplotlib') if m in sys.modules]; "
            "print(len(names), bad); sys.exit(1 if bad or len(names) < 10 else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_agent_command_line_runs_with_tensorflow_unimportable() -> None:
    # a None entry in sys.modules makes any `import tensorflow` raise ImportError
    code = ("import sys; sys.modules.update(tensorflow=None, edgeq=None, keras=None); "
            "from device_agent.cli import main; sys.argv = ['edgeq-agent', '--help']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "--trust-key" in proc.stdout, proc.stderr
