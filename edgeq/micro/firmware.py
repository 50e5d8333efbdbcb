"""`edgeq firmware run`: build the exported generic project against TensorFlow Lite Micro's C++
sources and run it: natively (`host`, TFLM's reference kernels) or on an emulated Cortex-M4
(QEMU's mps2-an386, TFLM built with the CMSIS-NN kernels), feeding the golden inputs.

What it reports: each step (TFLM library, compile, link, run), flash and RAM from the ELF's
sections, the arena the interpreter used, the largest difference of each output from the golden
outputs (LiteRT's reference kernels on the host, written by `export micro --golden`), and on the
Cortex-M4 the instructions of each Invoke under `-icount shift=0` (QEMU executes one
instruction per virtual ns; SysTick counts the board's 25 MHz clock, so the count has a
resolution of 40 instructions), which repeat exactly from run to run. A failure names its step in one line.

TFLM's libraries are built by TFLM's own Makefile, once per tree and target (make leaves them
in the tree's gen/ directory and rebuilds nothing next time).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import EdgeqError, InputError

TARGETS = ("host", "cortex-m4")
QEMU_BOARD = "mps2-an386"
BOARD_CLOCK_HZ = 25_000_000  # mps2-an386 SYSCLK: SysTick's processor clock
CORTEX_M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-funsigned-char",
                   "-mlittle-endian", "-fomit-frame-pointer", "-DTF_LITE_MCU_DEBUG_LOG"]
# TFLM's Makefile compiles with these; the app must agree (TfLiteTensor's layout depends on them)
TFLM_DEFINES = ["-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON"]


class FirmwareError(EdgeqError):
    """A firmware step failed; `step` names it (tflm, compile, link, overflow, size, run,
    arena)."""

    exit_code = 1

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class FirmwareConfig:
    """Everything `edgeq firmware run` needs."""

    out: Path  # an `edgeq export micro --target generic --golden ...` directory
    tflm: Path  # a tflite-micro source tree with its downloads in place
    target: str = "host"
    timeout_s: float = 600.0
    jobs: int = 2

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise InputError(f"unknown --target '{self.target}'; expected {' or '.join(TARGETS)}")
        if not (self.tflm / "tensorflow/lite/micro/tools/make/Makefile").is_file():
            raise InputError(f"{self.tflm} is not a tflite-micro tree (no "
                             "tensorflow/lite/micro/tools/make/Makefile)")
        if not list(self.out.glob("*_golden.h")) or not (self.out / "main.cc").is_file():
            raise InputError(f"{self.out}: not an `edgeq export micro --target generic --golden` "
                             "output (needs main.cc and NAME_golden.h)")


@dataclass
class FirmwareReport:
    """What one build and run gave."""

    target: str
    kernels: str
    passed: bool
    golden_samples: int
    max_diff_lsb: int
    output_max_diff_lsb: list[int]
    tolerance_lsb: int
    flash_bytes: int
    ram_bytes: int
    arena_used_bytes: int
    arena_bytes: int
    instructions_per_inference: list[int] = field(default_factory=list)  # cortex-m4 only
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tflm_library(cfg: FirmwareConfig) -> Path:
    """libtensorflow-microlite.a for the target, built by TFLM's Makefile (once: make keeps it)."""
    args = ["TARGET=cortex_m_qemu", "TARGET_ARCH=cortex-m4", "OPTIMIZED_KERNEL_DIR=cmsis_nn"] \
        if cfg.target == "cortex-m4" else []
    cmd = ["make", "-f", "tensorflow/lite/micro/tools/make/Makefile", *args, "microlite",
           f"-j{cfg.jobs}"]
    _run(cmd, cfg.tflm, cfg.timeout_s * 3, "tflm")
    pattern = ("cortex_m_qemu_cortex-m4_*cmsis_nn*" if cfg.target == "cortex-m4"
               else f"{platform.system().lower()}_{platform.machine()}_*")
    candidates = sorted((cfg.tflm / "gen").glob(f"{pattern}/lib/libtensorflow-microlite.a"))
    if not candidates:
        raise FirmwareError("tflm", f"make microlite built no libtensorflow-microlite.a under "
                                    f"{cfg.tflm / 'gen' / pattern}")
    return candidates[-1]


def _run(cmd: list[str], cwd: Path | None, timeout: float, step: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise FirmwareError(step, f"{cmd[0]} not found ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise FirmwareError(step, f"{Path(cmd[0]).name} did not finish in {timeout:.0f} s") from None
    if done.returncode:
        text = (done.stderr or done.stdout).strip().splitlines()
        telling = ("error:", "undefined reference", "overflowed", "will not fit", "No rule")
        errors = [line for line in text if any(t in line for t in telling)
                  and "collect2" not in line] or text
        raise FirmwareError(step, f"{Path(cmd[0]).name} failed: {errors[0][:300] if errors else ''}"
                            f"{f' (and {len(errors) - 1} more lines)' if len(errors) > 1 else ''}")
    return done


def _includes(tflm: Path) -> list[str]:
    downloads = tflm / "tensorflow/lite/micro/tools/make/downloads"
    return [f"-I{tflm}", f"-I{downloads / 'flatbuffers/include'}", f"-I{downloads / 'gemmlowp'}"]


def build(cfg: FirmwareConfig, library: Path, work: Path) -> Path:
    """Compile and link the exported project (+ the Cortex-M4 start and linker script)."""
    cross = cfg.target == "cortex-m4"
    cxx, cc = ("arm-none-eabi-g++", "arm-none-eabi-gcc") if cross else ("g++", "gcc")
    flags = [*(CORTEX_M4_FLAGS if cross else []), *TFLM_DEFINES, "-O2", "-std=c++17",
             "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-ffunction-sections",
             "-fdata-sections", "-DEDGEQ_REPORT", *(["-DEDGEQ_TICKS=edgeq_ticks"] if cross else []),
             f"-I{cfg.out}", *_includes(cfg.tflm)]
    sources = [cfg.out / "main.cc", *sorted(cfg.out.glob("*_model_data.cc")),
               *sorted(cfg.out.glob("*_golden.cc"))]
    objects = []
    for source in sources:
        obj = work / (source.stem + ".o")
        _run([cxx, *flags, "-c", str(source), "-o", str(obj)], None, cfg.timeout_s, "compile")
        objects.append(obj)
    elf = work / "firmware.elf"
    if cross:
        startup = cfg.out / "cortex-m4" / "startup.c"
        obj = work / "startup.o"
        _run([cc, *CORTEX_M4_FLAGS, "-O2", "-c", str(startup), "-o", str(obj)], None,
             cfg.timeout_s, "compile")
        link = [cxx, *CORTEX_M4_FLAGS, "--specs=rdimon.specs", "-nostartfiles",
                f"-T{cfg.out / 'cortex-m4' / 'mps2_an386.ld'}", "-Wl,--gc-sections",
                *map(str, objects), str(obj), str(library), "-lm", "-o", str(elf)]
    else:
        link = [cxx, "-Wl,--gc-sections", *map(str, objects), str(library), "-lm", "-o", str(elf)]
    try:
        _run(link, None, cfg.timeout_s, "link")
    except FirmwareError as e:
        if "overflow" in str(e) or "will not fit" in str(e):
            raise FirmwareError("overflow", str(e).split(": ", 1)[1]) from None
        raise
    return elf


def _sizes(elf: Path, cross: bool) -> tuple[int, int]:
    """(flash, RAM) bytes: text + data, and data + bss."""
    tool = "arm-none-eabi-size" if cross else "size"
    out = _run([tool, str(elf)], None, 60, "size").stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return text + data, data + bss


def run_firmware(cfg: FirmwareConfig, elf: Path) -> str:
    """The firmware's output: natively, or under qemu-system-arm with semihosting."""
    if cfg.target == "host":
        cmd = [str(elf)]
    else:
        if shutil.which("qemu-system-arm") is None:
            raise FirmwareError("run", "qemu-system-arm not found (Debian package qemu-system-arm)")
        cmd = ["qemu-system-arm", "-M", QEMU_BOARD, "-cpu", "cortex-m4", "-nographic",
               "-monitor", "none", "-serial", "none", "-icount", "shift=0",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.timeout_s)
    except subprocess.TimeoutExpired:
        raise FirmwareError("run", f"the firmware did not finish in {cfg.timeout_s:.0f} s") from None
    return done.stdout + done.stderr


_ARENA = re.compile(r"arena used (\d+) of (\d+) bytes")
_GOLDEN = re.compile(r"edgeq golden: (PASS|FAIL), max \|diff\| (\d+) LSB over (\d+) samples")
_OUTPUT = re.compile(r"edgeq output (\d+) max_diff_lsb (\d+)")
_TICKS = re.compile(r"edgeq ticks (\d+) (\d+)")


def parse_run(text: str, tolerance: int) -> dict[str, Any]:
    """The lines the exported app prints (edgeq_app.h, NAME_golden.h with EDGEQ_REPORT)."""
    arena, golden = _ARENA.search(text), _GOLDEN.search(text)
    if arena is None:
        raise FirmwareError("arena", f"the model did not load and allocate: {_why(text)}")
    if golden is None:
        raise FirmwareError("run", f"no golden result printed (Invoke failed?): "
                                   f"{text.strip()[-300:]}")
    outputs = [int(v) for _, v in sorted((int(k), v) for k, v in _OUTPUT.findall(text))]
    return {"arena_used_bytes": int(arena[1]), "arena_bytes": int(arena[2]),
            "passed": golden[1] == "PASS", "max_diff_lsb": int(golden[2]),
            "golden_samples": int(golden[3]), "output_max_diff_lsb": outputs,
            # -icount shift=0: one instruction per virtual ns; SysTick ticks at the board clock
            "instructions_per_inference": [int(t) * (1_000_000_000 // BOARD_CLOCK_HZ)
                                           for _, t in _TICKS.findall(text)],
            "tolerance_lsb": tolerance}


_NODE = re.compile(r"Node (\w+) \(number (\d+)\) failed to (prepare|invoke)")
# What TFLM's kernels check, in words (the condition they print is their source line)
_KNOWN = {"cmsis_nn/fully_connected.cc": ("is_per_channel", "CMSIS-NN's FULLY_CONNECTED takes "
                                          "per-channel weights only with int8 inputs; this one "
                                          "is int16x8 with per-channel weights")}


def _why(text: str) -> str:
    """The op that failed and why, from TFLM's log (else the app's own line)."""
    lines = text.strip().splitlines()
    node = next((m for line in lines if (m := _NODE.search(line))), None)
    if node is None:
        return next((line for line in lines if "edgeq:" in line), text.strip()[-300:]) or "no output"
    check = next((line for line in lines if ".cc:" in line), "")
    hint = next((words for source, (needle, words) in _KNOWN.items()
                 if source in check and needle in check), "")
    return (f"{node[1]} (node {node[2]}) failed to {node[3]} in TFLM"
            f"{f' ({check.split()[0]})' if check else ''}{f': {hint}' if hint else ''}")


def firmware_run(cfg: FirmwareConfig) -> FirmwareReport:
    """Build TFLM (cached), build the firmware, run it, read what it printed. Outputs beyond the
    export's tolerance give a report with `passed` False (the CLI exits 1)."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    library = tflm_library(cfg)
    seconds["tflm"] = round(time.perf_counter() - start, 2)
    with tempfile.TemporaryDirectory(prefix="edgeq-firmware-") as tmp:
        start = time.perf_counter()
        elf = build(cfg, library, Path(tmp))
        seconds["build"] = round(time.perf_counter() - start, 2)
        flash, ram = _sizes(elf, cfg.target == "cortex-m4")
        start = time.perf_counter()
        text = run_firmware(cfg, elf)
        seconds["run"] = round(time.perf_counter() - start, 2)
    tolerance = int(re.search(r"kGoldenToleranceLsb = (\d+)",
                              next(cfg.out.glob("*_golden.h")).read_text())[1])  # type: ignore[index]
    parsed = parse_run(text, tolerance)
    kernels = "CMSIS-NN (TFLM cmsis_nn)" if cfg.target == "cortex-m4" else "TFLM reference"
    return FirmwareReport(cfg.target, kernels, flash_bytes=flash, ram_bytes=ram,
                          seconds=seconds, **parsed)
