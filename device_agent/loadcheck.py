"""Load-and-invoke a freshly received model in a child process before it is activated: a bad
model can crash an interpreter (TFLM segfaults on some), and that must not take the agent down.

Usage as a program: python -m device_agent.loadcheck BUNDLE_DIR RUNTIME
Prints one JSON line {ok, runtime, version, error}; exit 0 when the model loads and invokes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .child import last_line, run_child


@dataclass(frozen=True)
class LoadCheck:
    """Outcome of loading and invoking a model in a child process."""

    ok: bool
    runtime: str = ""
    version: str = ""
    error: str = ""


def check_in_child(bundle_dir: Path, runtime: str, timeout_s: float = 300.0,
                   python: tuple[str, ...] = ()) -> LoadCheck:
    """Run the check as a child process and report what happened, crashes included.

    `python`: the command that starts the child interpreter (default: this one)."""
    child = run_child("device_agent.loadcheck", [str(bundle_dir), runtime], timeout_s, python)
    if child.signal is not None:
        return LoadCheck(False, runtime, error=f"the {runtime} interpreter crashed (signal "
                                                f"{child.signal}) loading the model")
    if child.failure("load check", timeout_s):
        hint = "; see edgeq-agent --child-python" if child.start_error else ""
        return LoadCheck(False, runtime, error=child.failure("load check", timeout_s) + hint)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return LoadCheck(False, runtime, error=f"load check failed: {last_line(child.stderr)}")
    result = json.loads(lines[-1])
    return LoadCheck(bool(result["ok"]), result.get("runtime", runtime),
                     result.get("version", ""), result.get("error", ""))


def _child(bundle_dir: Path, runtime_name: str) -> int:
    import numpy as np

    from .bundle import Bundle
    from .evaluate import raw_samples
    from .runtimes import open_runtime

    try:
        bundle = Bundle.load(bundle_dir)
        with open_runtime(runtime_name, bundle.model_path.read_bytes()) as rt:
            _check_io(rt, bundle)
            samples = raw_samples(bundle, max_samples=1)
            sample = samples[0] if samples else [np.zeros(s.shape, s.dtype) for s in rt.inputs()]
            rt.infer(sample)
            print(json.dumps({"ok": True, "runtime": rt.name, "version": rt.version}))
    except Exception as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(json.dumps({"ok": False, "runtime": runtime_name,
                          "error": f"{type(e).__name__}: {message}"}))
        return 1
    return 0


def _check_io(rt, bundle) -> None:
    """The interpreter must see the I/O the host described (dtype and shape)."""
    for kind, got, want in (("input", rt.inputs(), bundle.inputs()),
                            ("output", rt.outputs(), bundle.outputs())):
        if len(got) != len(want):
            raise ValueError(f"model has {len(got)} {kind}s, bundle.json describes {len(want)}")
        for g, w in zip(got, want):
            if (g.dtype, tuple(g.shape)) != (w.dtype, tuple(w.shape)):
                raise ValueError(f"{kind} {w.name}: interpreter sees {g.dtype}{list(g.shape)}, "
                                 f"bundle.json says {w.dtype}{list(w.shape)}")


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1]), sys.argv[2]))
