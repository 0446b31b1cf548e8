# hsmcloud: `make up` runs the service, `make test` runs the suite. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the PKCS#11 library is compiled by the install: rebuild it when its sources change
NATIVE := setup.py $(wildcard src/hsmcloud/clients/pkcs11/native/*.[ch])

.PHONY: up test bench clean

up: $(VENV)/.installed
	$(BIN)/hsmcloud up $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python bench/arm_bench.py

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml $(NATIVE)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml $(NATIVE)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) .venv-azure-cli build *.egg-info src/*.egg-info
