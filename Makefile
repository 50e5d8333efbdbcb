# edgeq — `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OUT ?= out/demo

.PHONY: install system-deps test demo bench examples clean

# Debian packages: compilers for export micro, mosquitto for the fleet tests (root + apt-get).
system-deps:
	bash .ci/system-deps.sh

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[host,test]'

test: system-deps install
	$(PYTHON) -m pytest -q

demo: install
	OUT=$(OUT) PYTHON=$(PYTHON) bash examples/demo.sh

bench: install
	$(PYTHON) bench/convert_bench.py
	$(PYTHON) bench/search_bench.py
	$(PYTHON) bench/export_bench.py
	$(PYTHON) bench/fleet_bench.py

# Retrain the bundled example models (seeded; needs only scikit-learn's bundled data).
examples: install
	$(PYTHON) examples/train_examples.py

clean:
	rm -rf out .pytest_cache
