# Two commands do all the set-up on a fresh machine:  make run  /  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench bench-classify bench-heldout sample clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

# The main job, end to end on the bundled sample: extract features, compare classifiers, write a report.
run: $(STAMP)
	$(PY) pipeline.py run --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# The inner loop: the suite less the tests marked slow (real images, real weights, whole runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/bench.py

# The classify stage at 10^4-10^5 rows on generated stores (~40 min; --quick ~5 min).
bench-classify: $(STAMP)
	$(PY) bench/classify_scale.py

bench-heldout: $(STAMP)
	$(PY) bench/heldout_study.py

# Rebuild data/sample from ../shared/datasets/hymenoptera (the committed copy is its output).
sample: $(STAMP)
	$(PY) data/make_sample.py

clean:
	rm -rf runs/ .pytest_cache
