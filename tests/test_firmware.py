"""The exported firmware on real TensorFlow Lite Micro C++: built against TFLM's libraries
(`.ci/tflm-env.sh` builds them once: host reference kernels, Cortex-M4 with CMSIS-NN), run
natively and on QEMU's mps2-an386 (a Cortex-M4), its outputs compared with the host's golden
outputs. Three models: the digits CNN (int8), the attention model (int16x8) and a MobileNet-class
int8 CNN over 500 KB. The int16x8 model runs under CMSIS-NN only when converted with
--cmsis-nn (per-tensor FULLY_CONNECTED weights); without it the refusal is named."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import bundled, run_cli

from edgeq.convert import ConvertConfig, convert
from edgeq.micro.export import MicroConfig, export_micro
from edgeq.micro.firmware import FirmwareConfig, FirmwareError, firmware_run

TFLM_DIR = Path(os.environ.get("EDGEQ_TFLM_DIR", Path.home() / ".cache/edgeq/tflm")) / "tflite-micro"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def tflm() -> Path:
    ready = all(any((TFLM_DIR / "gen").glob(f"{pattern}/lib/libtensorflow-microlite.a"))
                for pattern in ("linux_x86_64_*", "cortex_m_qemu_cortex-m4_*"))
    if not ready:
        why = (f"no TFLM tree with built libraries at {TFLM_DIR}; build it with "
               ".ci/tflm-env.sh")
        if os.environ.get("EDGEQ_REQUIRE_TFLM"):
            pytest.fail(why)
        pytest.skip(why)
    return TFLM_DIR


def _mobilenet_class(tmp: Path) -> tuple[Path, Path]:
    """A MobileNetV1-shaped int8 CNN (depthwise-separable blocks, ~0.6 M parameters)."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((64, 64, 3))
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu6")(x)
    for filters, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        h = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu6")(h)
        h = keras.layers.Conv2D(filters, 1, activation="relu6")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(x, keras.layers.Dense(10)(h))
    path = tmp / "mobilenet_class.keras"
    model.save(path)
    calib = tmp / "mobilenet_calib.npz"
    np.savez(calib, x=np.random.default_rng(0).uniform(-1, 1, (16, 64, 64, 3)).astype(np.float32))
    return path, calib


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> an export micro --target generic --golden directory."""
    tmp = tmp_path_factory.mktemp("firmware")
    attention = bundled("digits_attention")
    models = {"digits_cnn": (*bundled("digits_cnn")[:2], "int8", bundled("digits_cnn")[2], False),
              "attention": (*attention[:2], "int16x8", attention[2], False),
              "attention_cmsis": (*attention[:2], "int16x8", attention[2], True)}
    mobilenet, calib = _mobilenet_class(tmp)
    models["mobilenet"] = (mobilenet, calib, "int8", calib, False)
    out = {}
    for name, (model, calib_data, mode, golden, cmsis_nn) in models.items():
        convert(ConvertConfig(model, tmp / name, calib_data, mode=mode, show_progress=False,
                              cmsis_nn=cmsis_nn))
        export_micro(MicroConfig(tmp / name / "model.tflite", tmp / f"fw-{name}", name,
                                 golden=golden, golden_samples=3))
        out[name] = tmp / f"fw-{name}"
    assert (tmp / "mobilenet" / "model.tflite").stat().st_size > 500_000
    return out


@pytest.mark.parametrize("target", ["host", "cortex-m4"])
@pytest.mark.parametrize("name", ["digits_cnn", "attention", "attention_cmsis", "mobilenet"])
def test_exported_firmware_runs_on_tflm_cpp(tflm: Path, exported: dict[str, Path], name: str,
                                            target: str, record_property) -> None:
    if (name, target) == ("attention", "cortex-m4"):  # per-channel int16 FC: CMSIS-NN refuses
        with pytest.raises(FirmwareError, match=r"arena: .*FULLY_CONNECTED \(node \d+\) failed "
                                                r"to prepare .*per-channel weights only with int8"):
            firmware_run(FirmwareConfig(exported[name], tflm, target))
        return
    report = firmware_run(FirmwareConfig(exported[name], tflm, target))
    record_property("report", report.to_dict())
    assert report.passed, report.to_dict()
    assert report.golden_samples == 3 and len(report.output_max_diff_lsb) >= 1
    assert max(report.output_max_diff_lsb) == report.max_diff_lsb <= report.tolerance_lsb
    assert 0 < report.arena_used_bytes <= report.arena_bytes
    assert report.flash_bytes > (500_000 if name == "mobilenet" else 0)
    if target == "cortex-m4":
        assert report.kernels.startswith("CMSIS-NN") and len(report.instructions_per_inference) == 3
        assert min(report.instructions_per_inference) > 1000
        again = firmware_run(FirmwareConfig(exported[name], tflm, target))
        assert again.instructions_per_inference == report.instructions_per_inference  # -icount
    elif name == "digits_cnn":  # TFLM's reference kernels = LiteRT's on this int8 CNN
        assert report.max_diff_lsb == 0


def test_cli_firmware_errors_are_one_line(tmp_path: Path, capsys) -> None:
    for args, message in ((["/nope", "--tflm", str(tmp_path)], "not a tflite-micro tree"),
                          ([str(tmp_path), "--tflm", str(_fake_tree(tmp_path))],
                           "not an `edgeq export micro")):
        code, _, err = run_cli(["firmware", "run", *args], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def _fake_tree(tmp: Path) -> Path:
    makefile = tmp / "tree/tensorflow/lite/micro/tools/make/Makefile"
    makefile.parent.mkdir(parents=True)
    makefile.write_text("")
    return tmp / "tree"


@pytest.mark.parametrize("target,main", [("arduino", "*.ino"), ("zephyr", "src/main.cc"),
                                         ("esp-idf", "main/main.cc")])
def test_every_template_compiles_against_the_tflm_headers(tflm: Path, tmp_path: Path, target: str,
                                                          main: str) -> None:
    """Arduino/Zephyr/ESP-IDF apps compiled with TFLM's headers (and stubs for the SDK calls
    they make), so an API drift in the resolver or app code fails here, not on a user's desk."""
    import subprocess

    from edgeq.micro.firmware import TFLM_DEFINES, _includes

    model, calib, golden = bundled("digits_cnn")
    convert(ConvertConfig(model, tmp_path / "m", calib, show_progress=False))
    out = tmp_path / "fw"
    export_micro(MicroConfig(tmp_path / "m" / "model.tflite", out, "digits_cnn", target=target,
                             golden=golden, golden_samples=2))
    sources = sorted(out.rglob(Path(main).name))
    assert sources, list(out.rglob("*"))
    stubs = Path(__file__).parent / "firmware_stubs"
    done = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", *TFLM_DEFINES, "-x", "c++",
                           "-c", str(sources[0]), "-o", str(tmp_path / "app.o"), f"-I{out}",
                           f"-I{sources[0].parent}", f"-I{stubs}", *_includes(tflm)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
