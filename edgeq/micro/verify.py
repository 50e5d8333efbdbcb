"""Prove the generated C++ is what it claims: it compiles warning-free (host g++ and, when
installed, arm-none-eabi-g++ for Cortex-M4), and in the object file the model array is 16-byte
aligned, read-only and byte-identical to the .tflite."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import ModelError

HOST_FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2", "-c"]
ARM_FLAGS = [*HOST_FLAGS, "-mcpu=cortex-m4", "-mthumb", "-ffunction-sections", "-fdata-sections"]
COMPILERS = {"host": ("g++", HOST_FLAGS), "cortex-m4": ("arm-none-eabi-g++", ARM_FLAGS)}


@dataclass(frozen=True)
class ArraySymbol:
    """Where the model array sits in an object file."""

    section: str
    alignment: int  # the section's alignment
    offset: int  # symbol offset within the section
    read_only: bool
    data: bytes


def compile_source(compiler: str, flags: list[str], source: Path, obj: Path) -> None:
    """Compile one generated .cc; raises ModelError with the first compiler error line."""
    proc = subprocess.run([compiler, *flags, str(source), "-I", str(source.parent), "-o", str(obj)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr[:300])
        raise ModelError(f"{compiler} rejected {source.name}: {first.strip()}")


def read_symbol(obj: Path, symbol: str) -> ArraySymbol:
    """Locate `symbol` with readelf and read its bytes from the object file."""
    sections = _sections(obj)
    for line in _readelf(obj, "-sW").splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[-1] == symbol and fields[6].isdigit():
            value, size, index = int(fields[1], 16), readelf_number(fields[2]), int(fields[6])
            sec = sections[index]
            raw = obj.read_bytes()[sec["offset"] + value: sec["offset"] + value + size]
            return ArraySymbol(sec["name"], sec["align"], value, "W" not in sec["flags"], raw)
    raise ModelError(f"{obj.name}: symbol {symbol} not found")


def readelf_number(text: str) -> int:
    """A size column of `readelf -s`: decimal below 100,000, hex ("0x9d2b0") from there on."""
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _readelf(obj: Path, option: str) -> str:
    tool = shutil.which("readelf") or shutil.which("arm-none-eabi-readelf")
    if tool is None:
        raise ModelError("readelf not found (install binutils) to inspect the compiled model")
    return subprocess.run([tool, option, str(obj)], capture_output=True, text=True, check=True).stdout


def _sections(obj: Path) -> dict[int, dict[str, Any]]:
    sections = {}
    pattern = re.compile(r"\[\s*(\d+)\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+[0-9a-f]+\s+"
                         r"[0-9a-f]+\s+([A-Z]*)\s+\d+\s+\d+\s+(\d+)")
    for match in pattern.finditer(_readelf(obj, "-SW")):
        sections[int(match.group(1))] = {"name": match.group(2), "offset": int(match.group(3), 16),
                                         "flags": match.group(4), "align": int(match.group(5))}
    return sections


def verify_objects(out: Path, cname: str, tflite: bytes, work: Path) -> dict[str, Any]:
    """Compile the model data for every available compiler and check the array in each object."""
    results: dict[str, Any] = {}
    for target, (compiler, flags) in COMPILERS.items():
        if shutil.which(compiler) is None:
            results[target] = {"compiler": compiler, "checked": False, "why": "not installed"}
            continue
        obj = work / f"{cname}_model_data.{target}.o"
        compile_source(compiler, flags, out / f"{cname}_model_data.cc", obj)
        for extra in sorted(out.glob(f"{cname}_golden.cc")):
            compile_source(compiler, flags, extra, work / f"{extra.stem}.{target}.o")
        headers = work / f"{cname}_headers.cc"  # every generated header that needs no TFLM
        headers.write_text("".join(f'#include "{h.name}"\n' for h in sorted(out.glob(f"{cname}_*.h"))
                                   if "op_resolver" not in h.name))
        compile_source(compiler, [*flags, "-I", str(out)], headers, work / f"headers.{target}.o")
        sym = read_symbol(obj, f"g_{cname}_model_data")
        problems = []
        if sym.data != tflite:
            problems.append("bytes differ from the .tflite")
        if sym.alignment < 16 or sym.offset % 16:
            problems.append(f"not 16-byte aligned (section align {sym.alignment}, offset {sym.offset})")
        if not sym.read_only:
            problems.append(f"in writable section {sym.section}")
        if problems:
            raise ModelError(f"{compiler}: g_{cname}_model_data " + "; ".join(problems))
        results[target] = {"compiler": compiler, "checked": True, "section": sym.section,
                           "symbol_bytes": len(sym.data),
                           "alignment": sym.alignment, "read_only": True, "bytes_equal": True}
    return results


def object_bytes(obj: Path, cname: str) -> bytes:
    """The model bytes as compiled into `obj`."""
    return read_symbol(obj, f"g_{cname}_model_data").data
