"""`benchmark` and `evaluate` commands: run the active model, fill in a result, hand it to the
outbox. A failure is a result with `errors`, never a lost report."""

from __future__ import annotations

import logging
import platform
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from . import __version__
from .benchmark import BenchmarkConfig, Interrupted, benchmark, random_inputs
from .bundle import Bundle
from .context import AgentContext
from .evaluate import evaluate, raw_samples
from .outbox import Outbox
from .power import PowerProbe, measure_power, unavailable_power
from .protocol import Command
from .receiver import model_info
from .runtimes import Runtime

log = logging.getLogger("edgeq.agent")


class Measurement:
    """Benchmarks and evaluations of the active model on this device."""

    def __init__(self, agent: AgentContext, outbox: Outbox, probe: PowerProbe | None,
                 power_reason: str, runtime_version: str, stopping: threading.Event) -> None:
        self.agent = agent
        self.outbox = outbox
        self.probe = probe
        self.power_reason = power_reason
        self.runtime_version = runtime_version
        self.stopping = stopping

    def run(self, cmd: Command) -> None:
        """Measure, publish the result (spooled), then say `done` or `failed`."""
        bundle = self.agent.store.active()
        if bundle is None:
            self.agent.event(cmd.id, "error", "failed",
                             "no model deployed yet; run `edgeq deploy` first")
            return
        self.agent.event(cmd.id, "info", "started",
                         f"{cmd.type} {bundle.name} on {self.agent.runtime_name}")
        self.agent.set_busy(cmd)
        result = self._new_result(cmd, bundle)
        try:
            self._fill_result(cmd, bundle, result)
        except Interrupted as e:
            result["errors"].append(f"interrupted: the agent is stopping ({e})")
        except Exception as e:
            log.exception("%s %s failed", cmd.type, cmd.id)
            result["errors"].append(f"{type(e).__name__}: {str(e)[:500]}")
        result = self.outbox.publish(result)
        self.agent.set_busy(None)
        if result["errors"]:
            self.agent.event(cmd.id, "error", "failed", "; ".join(result["errors"]),
                             report_id=result["report_id"])
        else:
            self.agent.event(cmd.id, "info", "done", f"{cmd.type} report {result['report_id']}",
                             report_id=result["report_id"])

    def _fill_result(self, cmd: Command, bundle: Bundle, result: dict[str, Any]) -> None:
        a = cmd.args
        model = bundle.model_path.read_bytes()
        threads = a.get("threads", 1)

        def open_model() -> Runtime:
            return self.agent.open_runtime(model, threads)

        eval_samples = raw_samples(bundle, a["max_samples"])
        stop = self.stopping.is_set
        if cmd.type == "evaluate":
            with open_model() as rt:
                result["runtime"]["version"] = rt.version
                result["accuracy"] = evaluate(rt, bundle, eval_samples, stop)
            return
        samples = eval_samples or random_inputs(bundle.inputs())
        cfg = BenchmarkConfig(a["runs"], a["warmup"], a["min_seconds"], a["max_seconds"],
                              should_stop=stop)
        busy: Callable[[float], int]
        if self.agent.runtime_name == "adb":  # a bridged phone: its own tool times it there
            rt = open_model()
            latency = {**cast(Any, rt).tool_benchmark(a["runs"], a["warmup"]),
                       "inputs": "the tool's own"}
            busy = cast(Any, rt).busy
        else:
            latency, rt = benchmark(open_model, samples, cfg)
            latency["inputs"] = "eval set" if eval_samples else "random"
            busy = _busy_loop(rt, samples, stop)
        with rt:
            result["runtime"]["version"] = rt.version
            result["latency"] = {**latency, "threads": threads}
            result["power"] = (measure_power(self.probe, self.power_reason, a["power_window_s"],
                                             busy, self._wait)
                               if a["power"] else unavailable_power("not requested"))
            if a["evaluate"]:
                result["accuracy"] = evaluate(rt, bundle, eval_samples, stop)

    def _wait(self, seconds: float) -> None:
        """Sleep that ends as soon as the agent is asked to stop."""
        if self.stopping.wait(seconds):
            raise Interrupted("stopped during the idle power window")

    def _new_result(self, cmd: Command, bundle: Bundle) -> dict[str, Any]:
        return {"schema_version": 1, "report_id": uuid.uuid4().hex, "cmd_id": cmd.id,
                "type": cmd.type, "device": self.agent.device, "ts": time.time(),
                "agent": {"version": __version__, "python": platform.python_version()},
                "arch": platform.machine(),
                "runtime": {"name": self.agent.runtime_name, "version": self.runtime_version,
                            "threads": cmd.args.get("threads", 1)},
                "model": model_info(bundle), "latency": None, "power": None, "accuracy": None,
                "errors": []}


def _busy_loop(rt: Runtime, samples: list[list[Any]],
               should_stop: Callable[[], bool]) -> Callable[[float], int]:
    def run(seconds: float) -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            if count % 16 == 0 and should_stop():
                raise Interrupted("stopped during the busy power window")
            rt.load_inputs(samples[count % len(samples)])
            rt.invoke()
            count += 1
        return count
    return run
