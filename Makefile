# Two commands do everything on a fresh machine: `make demo` and `make test` (each sets up first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output

.PHONY: setup demo test clean real-images

setup: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scripts.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(DEMO_OUT)

# The real-image checks (docs/real_radiographs.md); need ../shared/data. Rerun after a model release.
real-images: $(STAMP)
	$(PY) -m benchmarks.real_images gallery
	$(PY) -m benchmarks.real_images ct
