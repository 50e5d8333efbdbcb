# edgeq — `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OUT ?= out/demo

.PHONY: install test demo bench examples clean

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[host,test]'

test: install
	$(PYTHON) -m pytest -q

demo: install
	OUT=$(OUT) PYTHON=$(PYTHON) bash examples/demo.sh

bench: install
	$(PYTHON) bench/convert_bench.py
	$(PYTHON) bench/search_bench.py
	$(PYTHON) bench/export_bench.py

# Retrain the bundled example models (seeded; needs only scikit-learn's bundled data).
examples: install
	$(PYTHON) examples/train_examples.py

clean:
	rm -rf out .pytest_cache
