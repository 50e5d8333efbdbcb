# edgeq — `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OUT ?= out/demo

.PHONY: install system-deps arm64-env termux-env tflm-env lint test test-fast demo bench examples clean

# Debian packages: compilers (export micro), mosquitto, qemu/debootstrap/iproute2 (root + apt-get).
system-deps:
	bash .ci/system-deps.sh

# arm64 Python + aarch64 wheels for the QEMU agent test (cached in ~/.cache/edgeq/arm64).
arm64-env:
	bash .ci/arm64-env.sh || echo "arm64-env: not built; tests/test_qemu.py will be skipped" >&2

# A Termux-like venv (tflite-runtime, no ai-edge-litert) for tests/test_termux.py.
termux-env:
	bash .ci/termux-env.sh || echo "termux-env: not built; tests/test_termux.py will be skipped" >&2

# TFLite Micro's C++ tree + its libraries (host, Cortex-M4 CMSIS-NN) for tests/test_firmware.py.
tflm-env:
	bash .ci/tflm-env.sh || echo "tflm-env: not built; tests/test_firmware.py will be skipped" >&2

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[host,test,lint]'

# ruff (rules in pyproject.toml) and mypy, both at zero findings; `make test` runs them first.
lint: install
	$(PYTHON) -m ruff check edgeq device_agent tests bench examples
	$(PYTHON) -m mypy

test: system-deps install arm64-env termux-env tflm-env lint
	$(PYTHON) -m pytest -q

# The unit tier only (no TensorFlow conversion, interpreters, broker or subprocesses): < 1 min.
test-fast: install
	$(PYTHON) -m pytest -q -m unit

demo: system-deps install
	OUT=$(OUT) PYTHON=$(PYTHON) bash examples/demo.sh

bench: install
	$(PYTHON) bench/convert_bench.py
	$(PYTHON) bench/search_bench.py
	$(PYTHON) bench/export_bench.py
	$(PYTHON) bench/fleet_bench.py
	$(PYTHON) bench/rollout_bench.py

# Retrain the bundled example models (seeded; needs only scikit-learn's bundled data).
examples: install
	$(PYTHON) examples/train_examples.py

clean:
	rm -rf out .pytest_cache
