# Two commands do everything on a fresh machine: `make demo` and `make test` (each sets up first; `make test`
# checks the code style first, `make lint`, with the tools of requirements-dev.txt; its file checks read the files git
# tracks).
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

lint: $(DEV_STAMP)  # the MONAI model zoo's checks: black, isort, flake8 (pyproject.toml, setup.cfg), its pre-commit file checks
	$(PY) -m black --check .
	$(PY) -m isort --check-only .
	$(PY) -m flake8 .
	git ls-files -z '*.json' | xargs -0 -r $(VENV)/bin/pretty-format-json --no-sort-keys --indent=4
	git ls-files -z '*.yaml' '*.yml' | xargs -0 -r $(VENV)/bin/check-yaml
	git ls-files -z '*.py' | xargs -0 -r $(VENV)/bin/check-docstring-first
	git grep -z -I -l -e '' | xargs -0 -r $(VENV)/bin/mixed-line-ending --fix=no  # text files
	! git grep -n -I -E '[[:blank:]]+$$' -- ':!*.ts' ':!*.pt'  # trailing whitespace

test: lint
	$(PY) -m pytest tests -q -p no:cacheprovider

clean:  # the environment and what the demo wrote, nothing else in $(DEMO_OUT)
	rm -rf $(VENV) $(DEMO_OUT)/phantom $(DEMO_OUT)/radiograph $(DEMO_OUT)/reconstruction $(DEMO_OUT)/errors.json $(DEMO_OUT)/.3ddx_output.json
	-rmdir $(DEMO_OUT) 2>/dev/null

# The real-image checks (docs/real_radiographs.md); need ../shared/data. Rerun after a model release.
real-images: $(STAMP)
	$(PY) -m benchmarks.real_images gallery
	$(PY) -m benchmarks.real_images ct; status=$$?; if [ $$status -eq 3 ]; then echo "real-CT mask Dice below its 0.85 target (docs/real_radiographs.md)"; else exit $$status; fi
