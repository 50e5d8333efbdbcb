"""C/C++ sources for TFLite Micro: model array, metadata, arena, golden data, preprocessing."""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from device_agent.runtimes import TensorSpec
from edgeq.errors import InputError

BYTES_PER_LINE = 12
_C_KEYWORDS = frozenset("""
alignas alignof and asm auto bool break case catch char class const constexpr continue decltype
default delete do double else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not nullptr operator or private protected public register
return short signed sizeof static struct switch template this throw true try typedef typeid
typename union unsigned using virtual void volatile while xor
""".split())
_CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "uint8": "uint8_t",
           "float32": "float", "int64": "int64_t", "bool": "bool"}


def c_identifier(name: str) -> str:
    """NAME as a C identifier: other characters become '_', a leading digit gets 'model_'."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or ""
    if not ident:
        raise InputError(f"--name '{name}' has no letters or digits; expected a name such as kws_int8")
    if ident[0].isdigit():
        ident = f"model_{ident}"
    if ident in _C_KEYWORDS or keyword.iskeyword(ident):
        raise InputError(f"--name '{name}' is a C/C++ keyword; choose another name")
    return ident


def byte_lines(data: bytes | np.ndarray, fmt: str = "0x{:02x}") -> str:
    """Comma-separated values, BYTES_PER_LINE per line, indented by 2."""
    values = [fmt.format(v) for v in (data if isinstance(data, np.ndarray) else bytes(data))]
    return ",\n".join("  " + ", ".join(values[i:i + BYTES_PER_LINE])
                      for i in range(0, len(values), BYTES_PER_LINE))


def _io_block(prefix: str, specs: Sequence[TensorSpec]) -> str:
    lines = [f"inline constexpr int kNum{prefix}s = {len(specs)};"]
    for i, s in enumerate(specs):
        p = f"k{prefix}{i}"
        dims = ", ".join(str(d) for d in s.shape) or "1"
        lines += [f"// {prefix.lower()} {i}: '{s.name}' {s.dtype}{list(s.shape)}",
                  f'inline constexpr char {p}Name[] = "{s.name}";',
                  f'inline constexpr char {p}Dtype[] = "{s.dtype}";',
                  f"inline constexpr int {p}Dims[] = {{{dims}}};",
                  f"inline constexpr int {p}Rank = {len(s.shape)};",
                  f"inline constexpr int {p}Elements = {int(np.prod(s.shape)) if s.shape else 1};",
                  f"inline constexpr float {p}Scale = {s.scale!r}f;",
                  f"inline constexpr int {p}ZeroPoint = {s.zero_point};"]
    return "\n".join(lines)


def model_data_header(cname: str, size: int, sha256: str, version: str, ops: list[str],
                      inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], banner: str) -> str:
    """NAME_model_data.h: the array declaration, its size and constexpr metadata."""
    guard = f"EDGEQ_{cname.upper()}_MODEL_DATA_H_"
    op_list = ", ".join(f'"{op}"' for op in ops)
    return f"""{banner}
#ifndef {guard}
#define {guard}

// 16-byte aligned, const (stays in flash); defined in {cname}_model_data.cc.
extern const unsigned char g_{cname}_model_data[];
constexpr unsigned int g_{cname}_model_data_size = {size};

namespace {cname}_model {{

inline constexpr char kSha256[] = "{sha256}";
inline constexpr char kEdgeqVersion[] = "{version}";
inline constexpr int kNumOps = {len(ops)};
inline constexpr const char* kOps[] = {{{op_list}}};

{_io_block("Input", inputs)}

{_io_block("Output", outputs)}

}}  // namespace {cname}_model

#endif  // {guard}
"""


def model_data_source(cname: str, tflite: bytes, banner: str, section: str | None) -> str:
    """NAME_model_data.cc: the model bytes, 16-byte aligned, optionally in a linker section."""
    attribute = ""
    if section:
        if not re.fullmatch(r"[.A-Za-z_][.\w]*", section):
            raise InputError(f"--section '{section}' is not a valid section name (letters, digits, "
                             "'_' and '.')")
        attribute = f' __attribute__((section("{section}")))'
    return f"""{banner}
#include "{cname}_model_data.h"

alignas(16) const unsigned char g_{cname}_model_data[]{attribute} = {{
{byte_lines(tflite)}
}};
"""


def arena_header(cname: str, measured: int, margin: int, banner: str, how: str) -> str:
    """NAME_arena.h: measured size, margin, and the aligned arena (one definition, C++17 inline)."""
    guard = f"EDGEQ_{cname.upper()}_ARENA_H_"
    return f"""{banner}
#ifndef {guard}
#define {guard}

#include <cstdint>

namespace {cname}_model {{

// {how}
inline constexpr unsigned int kTensorArenaMeasuredBytes = {measured};
// Headroom for optimized kernels' scratch buffers (CMSIS-NN, ESP-NN) not used by the reference
// kernels the measurement ran with.
inline constexpr unsigned int kTensorArenaMarginBytes = {margin};
inline constexpr unsigned int kTensorArenaSize = {measured + margin};

alignas(16) inline uint8_t g_tensor_arena[kTensorArenaSize];

}}  // namespace {cname}_model

#endif  // {guard}
"""


def golden_sources(cname: str, inputs: list[np.ndarray], outputs: list[np.ndarray],
                   tolerance: int, banner: str) -> tuple[str, str]:
    """NAME_golden.h/.cc: K quantised input / expected output pairs, and an on-board check."""
    guard = f"EDGEQ_{cname.upper()}_GOLDEN_H_"
    count = len(inputs[0]) if inputs else 0
    decls, defs = [], []
    for kind, arrays in (("input", inputs), ("output", outputs)):
        for i, arr in enumerate(arrays):
            ctype = _CTYPES[arr.dtype.name]
            per = int(np.prod(arr.shape[1:]))
            sym = f"g_{cname}_golden_{kind}{i}"
            decls.append(f"extern const {ctype} {sym}[{count}][{per}];")
            fmt = "{}" if arr.dtype.kind in "iu" else "{!r}f"
            rows = ",\n".join("  {" + ", ".join(fmt.format(v.item()) for v in row.ravel()) + "}"
                              for row in arr.reshape(count, per))
            defs.append(f"const {ctype} {sym}[{count}][{per}] = {{\n{rows}\n}};")
    copy_in = "\n".join(
        f"    std::memcpy(interpreter.input({i})->data.raw, g_{cname}_golden_input{i}[k], "
        f"sizeof(g_{cname}_golden_input{i}[k]));" for i in range(len(inputs)))
    compare = "\n".join(
        f"    for (unsigned j = 0; j < sizeof(g_{cname}_golden_output{i}[k]) / "
        f"sizeof(g_{cname}_golden_output{i}[k][0]); ++j) {{\n"
        f"      const long got = static_cast<long>(tflite::GetTensorData<"
        f"{_CTYPES[outputs[i].dtype.name]}>(interpreter.output({i}))[j]);\n"
        f"      const long want = static_cast<long>(g_{cname}_golden_output{i}[k][j]);\n"
        f"      const long diff = got > want ? got - want : want - got;\n"
        f"      if (diff > worst_out[{i}]) worst_out[{i}] = diff;\n"
        f"      if (diff > worst) worst = diff;\n    }}" for i in range(len(outputs)))
    header = f"""{banner}
#ifndef {guard}
#define {guard}

#include <cstdint>
#include <cstring>

namespace {cname}_model {{
inline constexpr int kGoldenCount = {count};
// Largest |difference| (LSB) accepted between the board and the host's LiteRT outputs.
inline constexpr long kGoldenToleranceLsb = {tolerance};
}}  // namespace {cname}_model

{chr(10).join(decls)}

#ifdef EDGEQ_WITH_TFLM
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/kernels/internal/tensor_ctypes.h"

#ifdef EDGEQ_TICKS  // a cycle counter, e.g. -DEDGEQ_TICKS=edgeq_ticks (cortex-m4/startup.c)
extern "C" unsigned long EDGEQ_TICKS(void);
#endif

namespace {cname}_model {{
// Runs every golden input; returns true when all outputs are within kGoldenToleranceLsb.
// With EDGEQ_REPORT it prints each output's largest difference (and, with EDGEQ_TICKS, the
// cycles of each Invoke), the lines `edgeq firmware run` reads.
inline bool RunGolden(tflite::MicroInterpreter& interpreter, long* max_diff_lsb) {{
  long worst = 0;
  long worst_out[{len(outputs)}] = {{0}};
  for (int k = 0; k < kGoldenCount; ++k) {{
{copy_in}
#ifdef EDGEQ_TICKS
    const unsigned long start = EDGEQ_TICKS();
#endif
    if (interpreter.Invoke() != kTfLiteOk) return false;
#if defined(EDGEQ_TICKS) && defined(EDGEQ_REPORT)
    MicroPrintf("edgeq ticks %d %u", k, static_cast<unsigned>(EDGEQ_TICKS() - start));
#endif
{compare}
  }}
#ifdef EDGEQ_REPORT
  for (int i = 0; i < {len(outputs)}; ++i) {{
    MicroPrintf("edgeq output %d max_diff_lsb %d", i, static_cast<int>(worst_out[i]));
  }}
#endif
  *max_diff_lsb = worst;
  return worst <= kGoldenToleranceLsb;
}}
}}  // namespace {cname}_model
#endif  // EDGEQ_WITH_TFLM

#endif  // {guard}
"""
    source = f"""{banner}
#include "{cname}_golden.h"

{chr(10).join(defs)}
"""
    return header, source


def preprocessing_header(cname: str, contract: dict[str, Any], spec: TensorSpec,
                         banner: str) -> str:
    """NAME_preprocessing.h: the contract's constants and an inline apply-and-quantise."""
    guard = f"EDGEQ_{cname.upper()}_PREPROCESSING_H_"
    last = spec.shape[-1] if spec.shape else 1
    consts, body = [], []
    for k, step in enumerate(contract["steps"]):
        values = np.asarray(step["values"], np.float32).ravel()
        if values.size not in (1, last):
            raise InputError(f"preprocessing constant c{k} has {values.size} values; the C export "
                             f"supports 1 or one per feature ({last})")
        consts.append(f"inline constexpr float kC{k}[{values.size}] = {{"
                      + ", ".join(f"{v!r}f" for v in values.tolist()) + "};")
        index = "0" if values.size == 1 else f"i % {last}"
        sym = {"sub": "-", "add": "+", "mul": "*", "div": "/"}[step["op"]]
        body.append(f"    v = v {sym} kC{k}[{index}];")
    ctype = _CTYPES[spec.dtype]
    if spec.quantized:
        info = np.iinfo(np.dtype(spec.dtype))
        store = (f"    long q = std::lround(v / {spec.scale!r}f) + ({spec.zero_point});\n"
                 f"    if (q < {info.min}) q = {info.min};\n    if (q > {info.max}) q = {info.max};\n"
                 f"    out[i] = static_cast<{ctype}>(q);")
    else:
        store = f"    out[i] = static_cast<{ctype}>(v);"
    elements = int(np.prod(spec.shape)) if spec.shape else 1
    return f"""{banner}
#ifndef {guard}
#define {guard}

#include <cmath>
#include <cstdint>

namespace {cname}_model {{

// Preprocessing moved out of the model (edgeq --rewrite preprocessing): {contract['formula']}
// applied to input '{contract['input']}', then quantised exactly as the host evaluated it.
{chr(10).join(consts)}
inline constexpr int kPreprocessElements = {elements};

inline void Preprocess(const float* raw, {ctype}* out) {{
  for (int i = 0; i < kPreprocessElements; ++i) {{
    float v = raw[i];
{chr(10).join(body)}
{store}
  }}
}}

}}  // namespace {cname}_model

#endif  // {guard}
"""
