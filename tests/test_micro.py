"""export micro: C arrays that compile, are aligned, read-only and byte-exact; an exact resolver;
a measured arena; golden data and preprocessing that reproduce the host's numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import bundled, run_cli

from device_agent.preprocessing import Contract
from device_agent.runtimes import LiteRTRuntime, quantize
from device_agent.tflm_child import run_tflm
from edgeq.convert import ConvertConfig, convert
from edgeq.errors import InputError, ModelError
from edgeq.micro import MicroConfig, export_micro
from edgeq.micro.cgen import c_identifier
from edgeq.micro.resolver import OpUse, model_ops
from edgeq.micro.templates import TARGETS, render_target

HAS_ARM = shutil.which("arm-none-eabi-g++") is not None


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> OUT of `edgeq convert` for the models the export tests use."""
    root = tmp_path_factory.mktemp("converted")
    cases = {
        "cnn_int8": ("digits_cnn", {}),
        "attention_int16x8": ("digits_attention", {"mode": "int16x8", "rewrites": ("all",)}),
        # the hidden FC in int16, the other two in int8: FULLY_CONNECTED with both dtypes
        "outlier_mixed": ("digits_outlier_mlp", {"int16": (".*hidden.*",)}),
        "wine_rewritten": ("wine_collapse", {"rewrites": ("preprocessing",)}),
    }
    out = {}
    for name, (example, options) in cases.items():
        model, calib, evald = bundled(example)
        convert(ConvertConfig(model, root / name, calib, evald, show_progress=False, **options))
        out[name] = root / name
    return out


@pytest.mark.parametrize("case,example", [("cnn_int8", "digits_cnn"),
                                          ("attention_int16x8", "digits_attention"),
                                          ("outlier_mixed", "digits_outlier_mlp")])
def test_export_compiles_and_the_compiled_bytes_run_in_tflm(case, example, converted, tmp_path,
                                                           capsys) -> None:
    model = converted[case] / "model.tflite"
    code, out, err = run_cli(["export", "micro", str(model), "-o", str(tmp_path / "fw"), "--name",
                              case, "--golden", str(bundled(example)[2]), "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(out)
    objects = manifest["verified"]["objects"]
    assert objects["host"]["checked"] and objects["host"]["bytes_equal"]
    assert objects["host"]["alignment"] >= 16 and objects["host"]["read_only"]
    if HAS_ARM:
        assert objects["cortex-m4"]["checked"] and objects["cortex-m4"]["bytes_equal"]
    tflm = manifest["verified"]["tflm_from_object"]
    assert tflm["runs"] and tflm["max_abs_diff_lsb_vs_litert"] <= manifest["golden"]["tolerance_lsb"]
    assert manifest["model"]["array_overhead_bytes"] == 0
    assert manifest["model"]["bytes"] == model.stat().st_size
    fw = tmp_path / "fw"
    assert {f"{case}_model_data.h", f"{case}_model_data.cc", f"{case}_op_resolver.h",
            f"{case}_arena.h", f"{case}_golden.h", f"{case}_golden.cc", "manifest.json",
            "CMakeLists.txt", "main.cc", "edgeq_app.h"} <= {p.name for p in fw.iterdir()}
    source = (fw / f"{case}_model_data.cc").read_text()
    assert f"alignas(16) const unsigned char g_{case}_model_data[]" in source


def test_arena_is_the_smallest_that_works(converted, tmp_path) -> None:
    model = (converted["cnn_int8"] / "model.tflite").read_bytes()
    manifest = export_micro(MicroConfig(converted["cnn_int8"] / "model.tflite", tmp_path / "fw",
                                        "cnn", verify=False))
    measured = manifest["arena"]["measured_bytes"]
    with LiteRTRuntime(model) as rt:
        sample = [np.zeros(s.shape, s.dtype) for s in rt.inputs()]
    assert run_tflm(model, [sample], measured).ok
    assert not run_tflm(model, [sample], int(measured * 0.97)).ok
    assert measured < manifest["arena"]["tflm_python_default_bytes"]
    header = (tmp_path / "fw" / "cnn_arena.h").read_text()
    assert f"kTensorArenaMeasuredBytes = {measured};" in header


def test_resolver_has_exactly_the_models_ops_with_generic_kernels_where_dtypes_mix(converted) -> None:
    ops = {u.op: u for u in model_ops((converted["outlier_mixed"] / "model.tflite").read_bytes())}
    fc = ops["FULLY_CONNECTED"]
    assert set(fc.dtypes) == {"int8", "int16"} and fc.registration == ""  # generic kernel
    cnn = {u.op: u for u in model_ops((converted["cnn_int8"] / "model.tflite").read_bytes())}
    assert cnn["CONV_2D"].registration == "tflite::Register_CONV_2D_INT8()"
    assert set(cnn) == {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"}
    assert OpUse("BATCH_MATMUL", ("int16",), (1,)).method == "AddBatchMatMul"
    assert OpUse("DEPTHWISE_CONV_2D", ("int8",), (1,)).method == "AddDepthwiseConv2D"


def test_preprocessing_in_c_feeds_the_model_what_the_host_evaluated(converted, tmp_path) -> None:
    fw = tmp_path / "fw"
    manifest = export_micro(MicroConfig(converted["wine_rewritten"] / "model.tflite", fw, "wine",
                                        golden=bundled("wine_collapse")[2]))
    assert manifest["preprocessing"]["formula"] == "((x - c0) * c1)"
    raw = np.load(bundled("wine_collapse")[2])["x"][:3].astype(np.float32)
    program = tmp_path / "pre.cc"
    values = ", ".join(f"{v!r}f" for v in raw.ravel().tolist())
    program.write_text(f"""#include <cstdio>
#include "wine_preprocessing.h"
int main() {{
  const float raw[{raw.size}] = {{{values}}};
  int8_t out[wine_model::kPreprocessElements];
  for (int s = 0; s < {len(raw)}; ++s) {{
    wine_model::Preprocess(raw + s * wine_model::kPreprocessElements, out);
    for (int i = 0; i < wine_model::kPreprocessElements; ++i) std::printf("%d ", out[i]);
  }}
}}
""")
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(fw), str(program),
                    "-o", str(tmp_path / "pre")], check=True)
    got = np.array(subprocess.run([str(tmp_path / "pre")], capture_output=True, text=True,
                                  check=True).stdout.split(), int)
    contract = Contract.from_dict(manifest["preprocessing"])
    with LiteRTRuntime((converted["wine_rewritten"] / "model.tflite").read_bytes()) as rt:
        spec = rt.inputs()[0]
    want = quantize(contract.apply(raw), spec).ravel()
    assert np.max(np.abs(got - want.astype(int))) <= 1  # float rounding at .5 only


def test_every_target_renders_completely() -> None:
    for target in TARGETS:
        files = render_target(target, {"cname": "m", "CNAME": "M", "edgeq_version": "0",
                                       "model_file": "model.tflite", "sha256": "0" * 64,
                                       "sketch": "fw", "sources": "m_model_data.cc",
                                       "parent_sources": '"../m_model_data.cc"'})
        assert "edgeq_app.h" in files and all("{{" not in text for text in files.values())
    assert "fw.ino" in render_target("arduino", {"cname": "m", "CNAME": "M", "edgeq_version": "0",
                                                 "model_file": "f", "sha256": "0", "sketch": "fw",
                                                 "sources": "", "parent_sources": ""})


def test_names_become_c_identifiers_or_a_clear_error() -> None:
    assert c_identifier("kws model-v2") == "kws_model_v2"
    assert c_identifier("9lives") == "model_9lives"
    with pytest.raises(InputError, match="keyword"):
        c_identifier("int")
    with pytest.raises(InputError, match="no letters"):
        c_identifier("---")


def test_an_op_tflm_cannot_run_fails_the_export_naming_it(tmp_path) -> None:
    import keras

    from edgeq.model.load import load_model

    inp = keras.Input((4,), name="x")
    keras.Model(inp, keras.layers.Dense(3, activation="gelu")(inp)).save(tmp_path / "gelu.keras")
    (tmp_path / "gelu.tflite").write_bytes(load_model(tmp_path / "gelu.keras").tflite)
    with pytest.raises(ModelError, match=r"no kernel for GELU \(node \d+\)"):
        export_micro(MicroConfig(tmp_path / "gelu.tflite", tmp_path / "fw", "gelu"))
    assert not (tmp_path / "fw").exists()


def test_bad_export_input_is_one_line_exit_2(tmp_path, capsys) -> None:
    code, _, err = run_cli(["export", "micro", str(bundled("digits_cnn")[0]), "-o",
                            str(tmp_path / "fw"), "--name", "m"], capsys)
    assert code == 2 and "edgeq convert" in err and err.count("\n") == 1
    assert not (tmp_path / "fw").exists()


@pytest.mark.unit
# columns: readelf size column, bytes
@pytest.mark.parametrize("text,value", [("99999", 99999), ("0x186a0", 100000), ("0x9d2b0", 643760)])
def test_readelf_sizes_are_decimal_then_hex(text: str, value: int) -> None:
    from edgeq.micro.verify import readelf_number

    assert readelf_number(text) == value


@pytest.fixture(scope="module")
def megabyte_model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """An int8 MLP of > 1 MB, as large as users' models (readelf prints its size in hex)."""
    import keras

    from edgeq.convert import ConvertConfig, convert

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024, activation="relu"),
                              keras.layers.Dense(768), keras.layers.Dense(10)])
    root = tmp_path_factory.mktemp("mb")
    model.save(root / "mlp.keras")
    x = np.random.default_rng(0).normal(size=(16, 256)).astype(np.float32)
    np.savez(root / "data.npz", x=x)
    convert(ConvertConfig(root / "mlp.keras", root / "out", root / "data.npz", show_progress=False))
    return root / "out" / "model.tflite", root / "data.npz"


def test_export_of_a_megabyte_model_verifies(megabyte_model: tuple, tmp_path: Path) -> None:
    model, data = megabyte_model
    assert model.stat().st_size > 1_000_000
    manifest = export_micro(MicroConfig(model, tmp_path / "fw", "big", golden=data, golden_samples=2))
    host = manifest["verified"]["objects"]["host"]
    assert host["checked"] and host["symbol_bytes"] == model.stat().st_size
    assert manifest["verified"]["tflm_from_object"]["max_abs_diff_lsb_vs_litert"] <= 2
    assert manifest["integer_only"] and manifest["warnings"] == []


def test_export_of_a_float_model_warns_and_says_so(tmp_path: Path) -> None:
    float_model = tmp_path / "float.tflite"
    from edgeq.model.load import load_model

    float_model.write_bytes(load_model(bundled("digits_cnn")[0]).tflite)
    manifest = export_micro(MicroConfig(float_model, tmp_path / "fw", "f", verify=False))
    assert not manifest["integer_only"] and "not full-integer" in manifest["warnings"][0]


def test_export_tolerance_names_the_diverging_op(tmp_path: Path) -> None:
    model, calib, evalf = bundled("digits_attention")
    convert(ConvertConfig(model, tmp_path / "q", calib, show_progress=False))
    with pytest.raises(ModelError, match="first divergence tflm vs litert-ref: op "):
        export_micro(MicroConfig(tmp_path / "q" / "model.tflite", tmp_path / "fw", "a",
                                 golden=evalf, golden_samples=16, tolerance=0))
    assert not (tmp_path / "fw").exists()
