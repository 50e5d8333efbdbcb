"""Phones over adb: the bridge side of `edgeq-agent --adb`.

A Linux host with phones attached runs one agent per phone; each agent speaks MQTT as the phone
and does its work through adb: the model is pushed to the phone, LiteRT's own benchmark tool runs
there (latency as the tool reports it, see toolbench.py), and accuracy runs each eval sample
through the phone with `--input_layer_value_files` and `--output_filepath` (raw tensors). The
Debian `adb` binary is used as it is (a subprocess): it is what every phone user already has,
it handles USB and wireless pairing, and a Python adb client would be a second, less complete
implementation of the same protocol.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AgentError
from .power import ProbeUnavailable, Reading
from .runtimes import TensorSpec, open_runtime, resolve_runtime
from .toolbench import ToolOutputError, parse_tool_output

REMOTE_DIR = "/data/local/tmp/edgeq"
DELEGATE_FLAGS = {"cpu": (), "gpu": ("--use_gpu=true",), "nnapi": ("--use_nnapi=true",)}
PROPS = {"model": "ro.product.model", "android": "ro.build.version.release",
         "sdk": "ro.build.version.sdk", "abi": "ro.product.cpu.abi", "soc": "ro.soc.model",
         "board": "ro.board.platform", "manufacturer": "ro.product.manufacturer"}


class AdbError(AgentError, RuntimeError):
    """adb or the phone failed; the text says which command and what it printed."""


@dataclass(frozen=True)
class PhoneTarget:
    """How the bridge reaches one phone."""

    serial: str
    benchmark_binary: Path  # on the host; pushed once
    delegate: str = "cpu"
    adb: str = "adb"
    remote_dir: str = REMOTE_DIR


class Adb:
    """One phone through the `adb` binary."""

    def __init__(self, serial: str, binary: str = "adb") -> None:
        self.serial, self.binary = serial, binary

    def _run(self, args: Sequence[str], timeout: float = 120.0) -> str:
        cmd = [self.binary, "-s", self.serial, *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AdbError(f"{' '.join(cmd[:4])}: {e}") from e
        if done.returncode:
            raise AdbError(f"{' '.join(cmd[:5])} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def shell(self, command: str, timeout: float = 300.0) -> str:
        return self._run(["shell", command], timeout)

    def push(self, local: Path, remote: str) -> None:
        self._run(["push", str(local), remote])

    def pull(self, remote: str, local: Path) -> None:
        self._run(["pull", remote, str(local)])

    def props(self) -> dict[str, str]:
        """Android version, ABI, SoC and model of the phone (empty where it does not say)."""
        return {k: self.shell(f"getprop {p}", 20).strip() for k, p in PROPS.items()}


def attached_serials(binary: str = "adb") -> list[str]:
    """Serials of the phones `adb devices` lists as ready (not offline or unauthorized)."""
    try:
        out = subprocess.run([binary, "devices"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise AdbError(f"{binary} devices: {e}") from e
    return [line.split()[0] for line in out.splitlines()[1:]
            if len(line.split()) >= 2 and line.split()[1] == "device"]


def phone_device_id(prefix: str, serial: str, model: str) -> str:
    """A protocol-valid device id from the phone's model and serial."""
    raw = f"{prefix}{model}-{serial}" if model else f"{prefix}{serial}"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", raw).strip("-.")[:64]
    return cleaned or "phone-" + hashlib.sha256(serial.encode()).hexdigest()[:12]


class Phone:
    """The phone's side of deploys and measurements: tool and model pushed, tool run, parsed."""

    def __init__(self, target: PhoneTarget) -> None:
        self.target = target
        self.adb = Adb(target.serial, target.adb)
        self.props = self.adb.props()
        self.tool = f"{target.remote_dir}/{target.benchmark_binary.name}"
        self.litert_tool = "litert" in target.benchmark_binary.name
        self.adb.shell(f"mkdir -p {target.remote_dir}")
        self.adb.push(target.benchmark_binary, self.tool)
        self.adb.shell(f"chmod 755 {shlex.quote(self.tool)}")

    def push_model(self, model: bytes) -> str:
        """Put `model` on the phone (by content hash); its remote path."""
        remote = f"{self.target.remote_dir}/{hashlib.sha256(model).hexdigest()[:16]}.tflite"
        with tempfile.TemporaryDirectory(prefix="edgeq-adb-") as tmp:
            local = Path(tmp) / "model.tflite"
            local.write_bytes(model)
            self.adb.push(local, remote)
        return remote

    def run_tool(self, remote_model: str, runs: int, warmup: int, threads: int,
                 extra: Sequence[str] = ()) -> str:
        """The benchmark tool on the phone; its stdout (and the result JSON for the LiteRT one)."""
        delegate = DELEGATE_FLAGS[self.target.delegate]
        if self.litert_tool:
            result = f"{self.target.remote_dir}/result.json"
            flags = [f"--model={remote_model}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
                     f"--num_threads={threads}", f"--result_json={result}",
                     *(("--use_gpu",) if self.target.delegate == "gpu" else ()), *extra]
            out = self.adb.shell(" ".join([shlex.quote(self.tool), *map(shlex.quote, flags)]))
            return out + "\n" + self.adb.shell(f"cat {result}")
        flags = [f"--graph={remote_model}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
                 f"--num_threads={threads}", *delegate, *extra]
        return self.adb.shell(" ".join([shlex.quote(self.tool), *map(shlex.quote, flags)]))

    def check(self, model: bytes) -> str | None:
        """None when the phone's tool loads and runs `model` once, else why not."""
        try:
            parse_tool_output(self.run_tool(self.push_model(model), 1, 0, 1))
        except (AdbError, ToolOutputError) as e:
            return str(e)
        return None


class PhoneRuntime:
    """A Runtime whose invoke runs on the phone (one tool run per sample, raw tensors in and
    out); `tool_benchmark` gives the latency the phone's tool measures. Tensor specs come from
    the host's own interpreter, which never runs the model."""

    name = "adb"

    def __init__(self, phone: Phone, model: bytes, num_threads: int = 1) -> None:
        self.phone, self.threads = phone, num_threads
        host_runtime, _ = resolve_runtime("auto")
        with open_runtime(host_runtime, model) as rt:
            self._inputs, self._outputs = rt.inputs(), rt.outputs()
            # specs carry signature names; the tool's flags name the tensors themselves
            details = getattr(rt, "_input_details", None) or []
            self._tensor_names = [d["name"] for d in details] or [s.name for s in self._inputs]
        self.version = f"{phone.target.benchmark_binary.name} ({phone.target.delegate}, via adb)"
        self.remote = phone.push_model(model)
        self._loaded: list[np.ndarray] = []
        self._mean_ms = 1.0
        self._results: list[np.ndarray] = []

    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def load_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        self._loaded = [np.ascontiguousarray(x, dtype=s.dtype) for x, s in zip(inputs, self._inputs)]

    def invoke(self) -> None:
        d = self.phone.target.remote_dir
        with tempfile.TemporaryDirectory(prefix="edgeq-adb-") as tmp:
            files = []
            for k, (x, name) in enumerate(zip(self._loaded, self._tensor_names)):
                local = Path(tmp) / f"in{k}.raw"
                x.tofile(local)
                self.phone.adb.push(local, f"{d}/in{k}.raw")
                # the tool's map syntax: a ':' inside a layer name is written '::'
                files.append(f"{name.replace(':', '::')}:{d}/in{k}.raw")
            self.phone.run_tool(self.remote, 1, 0, self.threads, (
                f"--input_layer={','.join(self._tensor_names)}",
                f"--input_layer_shape={':'.join(','.join(map(str, s.shape)) for s in self._inputs)}",
                f"--input_layer_value_files={','.join(files)}", f"--output_filepath={d}/out.raw"))
            self.phone.adb.pull(f"{d}/out.raw", Path(tmp) / "out.raw")
            raw = (Path(tmp) / "out.raw").read_bytes()
        sizes = [int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in self._outputs]
        if len(raw) < sum(sizes):
            raise AdbError(f"the phone's tool wrote {len(raw)} output bytes; the model's outputs "
                           f"are {sum(sizes)}")
        self._results, offset = [], 0
        for spec, size in zip(self._outputs, sizes):
            self._results.append(np.frombuffer(raw[offset:offset + size], spec.dtype)
                                 .reshape(spec.shape).copy())
            offset += size

    def read_outputs(self) -> list[np.ndarray]:
        return list(self._results)

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.load_inputs(inputs)
        self.invoke()
        return self.read_outputs()

    def tool_benchmark(self, runs: int, warmup: int) -> dict[str, Any]:
        """Latency as the phone's tool measures and prints it."""
        latency = parse_tool_output(self.phone.run_tool(self.remote, runs, warmup, self.threads))
        self._mean_ms = float(latency["mean_ms"])
        return latency

    def busy(self, seconds: float) -> int:
        """Keep the phone inferring for about `seconds` (the power window); how many runs."""
        if self.phone.litert_tool:  # no time limit flags: as many runs as fit, by the last mean
            planned = max(10, int(seconds * 1e3 / max(self._mean_ms, 0.01)))
            return int(parse_tool_output(self.phone.run_tool(self.remote, planned, 0,
                                                             self.threads))["runs"])
        runs = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            runs += int(parse_tool_output(self.phone.run_tool(
                self.remote, 1_000_000, 0, self.threads,
                (f"--min_secs={max(0.1, end - time.monotonic()):.2f}",
                 f"--max_secs={max(0.2, end - time.monotonic()):.2f}")))["runs"])
        return runs

    def __enter__(self) -> PhoneRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class PhoneBatteryProbe:
    """The phone's battery read over adb (current_now x voltage_now). On USB the phone charges
    from the cable and the battery does not see what the phone draws: use wireless adb."""

    name = "adb-battery"

    def __init__(self, adb: Adb, node: str = "/sys/class/power_supply/battery") -> None:
        self.adb, self.node = adb, node
        status = self._cat("status")
        if status not in ("Discharging", "Not charging"):
            raise ProbeUnavailable(f"phone battery is {status or 'unreadable'} (on USB adb the "
                                   "cable powers the phone; use wireless adb, unplugged)")
        self.read()
        self.notes = (f"{node} over adb; magnitudes; ~3 Hz at best (one adb call per sample); "
                      "USB power falsifies it",)

    def _cat(self, leaf: str) -> str:
        try:
            return self.adb.shell(f"cat {self.node}/{leaf}", 10).strip()
        except AdbError as e:
            raise ProbeUnavailable(f"cannot read {self.node}/{leaf} over adb: {e}") from e

    def read(self) -> Reading:
        try:
            amps = abs(float(self._cat("current_now"))) / 1e6
            volts = abs(float(self._cat("voltage_now"))) / 1e6
        except ValueError as e:
            raise ProbeUnavailable(f"unreadable battery values over adb: {e}") from e
        return Reading(time.monotonic(), watts=amps * volts)
