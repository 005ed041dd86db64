# One place that creates the environment; `make study` and `make test` both refresh it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default

.PHONY: env study test lint book refresh-nbval clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[study,dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## The whole study on the embedded data (PROFILE=smoke|default|full), then the book.
study: $(STAMP)
	$(PY) -m dan.study --profile $(PROFILE)

## Every test: lint, unit tests, notebook CI (nbval on the smoke profile), and the book's strict build.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q -p no:cacheprovider --nbval tests/notebooks --nbval-sanitize-with tests/notebooks/sanitize.cfg
	$(PY) -m dan.study --book-only

## Re-execute the notebooks on the smoke profile into tests/notebooks (the outputs notebook CI compares).
refresh-nbval: $(STAMP)
	rm -rf results/smoke data/generated/smoke
	$(PY) -m dan.study --profile smoke --out tests/notebooks --no-book --fresh

## Rebuild the book from the executed notebooks in book/notebooks.
book: $(STAMP)
	$(PY) -m dan.study --book-only

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf _build results data/generated
