"""Fixtures: tiny real models (built in seconds) and the bundled examples."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before any test imports TensorFlow

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BUNDLED = ("digits_attention", "digits_cnn", "diabetes_regression")


# Test tiers (markers in pyproject.toml): a module's default tier; a test marked `unit` in a
# mixed module keeps it. `make test-fast` runs -m unit.
MODULE_TIERS = {
    "test_protocol": ("unit",), "test_power": ("unit",), "test_agent_store": ("unit",),
    "test_agent": ("mqtt",), "test_fleet": ("mqtt",), "test_adversarial": ("mqtt",),
    "test_docker": ("mqtt",), "test_netns": ("mqtt", "root", "slow"),
    "test_qemu": ("mqtt", "slow"),
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in ("unit", "integration", "mqtt")):
            continue
        for tier in MODULE_TIERS.get(item.module.__name__ if item.module else "", ("integration",)):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True, scope="session")
def _private_kernel_cache(tmp_path_factory: pytest.TempPathFactory):
    """Each test session learns int16 kernel support from scratch (no user cache); the user's
    environment is restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEQ_CACHE_DIR", str(tmp_path_factory.mktemp("kernel-cache")))
        yield


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `edgeq ARGS` in-process; returns (exit code, stdout, stderr)."""
    from edgeq import cli

    old = sys.argv
    sys.argv = ["edgeq", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def save_mlp(path: Path, head_name: str = "head", extra_layer: bool = False) -> Path:
    """A small softmax MLP saved as .keras (layers: body, [extra], HEAD_NAME, probs)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="body")(inp)
    if extra_layer:
        h = keras.layers.Dense(8, activation="relu", name="extra")(h)
    out = keras.layers.Softmax(name="probs")(keras.layers.Dense(3, name=head_name)(h))
    keras.Model(inp, out).save(path)
    return path


def bundled(name: str) -> tuple[Path, Path, Path]:
    """(model, calib.npz, eval.npz) of a bundled example."""
    return (EXAMPLES / f"{name}.keras", EXAMPLES / f"{name}_calib.npz",
            EXAMPLES / f"{name}_eval.npz")


@pytest.fixture(scope="session")
def multi_input_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Token ids (int32, embedded) + a float feature vector -> 3 classes."""
    import keras

    keras.utils.set_random_seed(1)
    ids = keras.Input((6,), dtype="int32", name="ids")
    feats = keras.Input((4,), name="feats")
    emb = keras.layers.Flatten()(keras.layers.Embedding(20, 4)(ids))
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([emb, keras.layers.Dense(8)(feats)]))
    model = keras.Model([ids, feats], out)
    root = tmp_path_factory.mktemp("multi")
    model.save(root / "multi.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "calib.npz", ids=rng.integers(0, 20, (16, 6)).astype(np.int32),
             feats=rng.normal(size=(16, 4)).astype(np.float32))
    return root / "multi.keras", root / "calib.npz"


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CNN exported as a SavedModel directory (dynamic batch)."""
    import keras

    model = keras.models.load_model(bundled("digits_cnn")[0], compile=False)
    path = tmp_path_factory.mktemp("sm") / "cnn_savedmodel"
    model.export(str(path), verbose=False)
    return path


@pytest.fixture(scope="session")
def float_tflite_dynamic_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CNN as a float .tflite whose batch dimension is dynamic (-1)."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(bundled("digits_cnn")[0], compile=False)
    path = tmp_path_factory.mktemp("tfl") / "cnn_float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(host.key, host.pub) made by the same code as `edgeq keys generate`."""
    from device_agent.signing import generate_keys

    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def cnn_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CNN converted to int8 by edgeq: OUT/model.tflite."""
    from edgeq.convert import ConvertConfig, convert

    model, calib, _ = bundled("digits_cnn")
    out = tmp_path_factory.mktemp("cnn") / "digits_cnn"
    convert(ConvertConfig(model, out, calib, show_progress=False))
    return out / "model.tflite"


@pytest.fixture()
def broker(tmp_path: Path, request: pytest.FixtureRequest):
    """A real mosquitto on a free loopback port, for one test (indirect param: persistent)."""
    from mqtt_env import Mosquitto

    b = Mosquitto(tmp_path / "broker", persistent=getattr(request, "param", True)).start()
    yield b
    b.stop()


@pytest.fixture()
def agents(tmp_path: Path, broker, signing_keys: tuple[Path, Path]):
    """start(device, *args) -> a running agent process on `broker`; all stopped afterwards."""
    from mqtt_env import AgentProcess

    started = []

    def start(device: str = "dev1", *args: str, trust_key: Path | None = None,
              data_dir: Path | None = None) -> AgentProcess:
        agent = AgentProcess(broker.url, device, data_dir or tmp_path / f"agent-{device}",
                             trust_key or signing_keys[1], args).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture()
def collectors(tmp_path: Path, broker):
    """start(*args, db=, url=, name=) -> a running `edgeq collect` process (default: on `broker`,
    storing in tmp_path/r.sqlite); all stopped afterwards, even when the test fails."""
    from mqtt_env import CollectorProcess

    started = []

    def start(*args: str, db: Path | str | None = None, url: str | None = None,
              name: str = "collector") -> CollectorProcess:
        collector = CollectorProcess(url or broker.url, db or tmp_path / "r.sqlite", args,
                                     name, log_dir=tmp_path).start()
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.stop()


@pytest.fixture(scope="session")
def gelu_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An int8 model LiteRT runs but TFLite Micro cannot (no GELU kernel in tflite-micro)."""
    import keras

    from edgeq.convert import ConvertConfig, convert

    root = tmp_path_factory.mktemp("gelu")
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="gelu"),
                              keras.layers.Dense(3)])
    model.save(root / "gelu.keras")
    np.savez(root / "calib.npz", x=np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))
    result = convert(ConvertConfig(root / "gelu.keras", root / "out", root / "calib.npz",
                                   show_progress=False))
    assert not result.report.to_dict()["tflm"]["runs"], "fixture needs a model TFLM cannot run"
    return root / "out" / "model.tflite"


@pytest.fixture(scope="session")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny BERT-shaped float .tflite as onnx2tf writes one (see bert_fixture.py), with
    calibration and eval token ids."""
    from bert_fixture import build_bert

    return build_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (initdb + pg_ctl on a free port)."""
    from pg_env import Postgres

    server = Postgres().start()
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server, as a URL."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
