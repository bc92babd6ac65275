# Two commands do everything on a fresh machine: `make demo` and `make test` (each sets up first; `make test`
# checks the code style first, `make lint`, with the tools of requirements-dev.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEMO_OUT ?= demo_output

.PHONY: setup demo lint test clean real-images

setup: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(PY) -m scripts.demo --out $(DEMO_OUT)

lint: $(DEV_STAMP)  # the MONAI model zoo's checks: black, isort, flake8 (pyproject.toml, setup.cfg)
	$(PY) -m black --check .
	$(PY) -m isort --check-only .
	$(PY) -m flake8 .

test: lint
	$(PY) -m pytest tests -q -p no:cacheprovider

clean:  # the environment and what the demo wrote, nothing else in $(DEMO_OUT)
	rm -rf $(VENV) $(DEMO_OUT)/phantom $(DEMO_OUT)/radiograph $(DEMO_OUT)/reconstruction $(DEMO_OUT)/errors.json $(DEMO_OUT)/.3ddx_output.json
	-rmdir $(DEMO_OUT) 2>/dev/null

# The real-image checks (docs/real_radiographs.md); need ../shared/data. Rerun after a model release.
real-images: $(STAMP)
	$(PY) -m benchmarks.real_images gallery
	$(PY) -m benchmarks.real_images ct; status=$$?; if [ $$status -eq 3 ]; then echo "real-CT mask Dice below its 0.85 target (docs/real_radiographs.md)"; else exit $$status; fi
