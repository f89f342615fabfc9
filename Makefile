# Two commands a new user needs (see README):
#   make demo   set up .venv and run the whole study on the built-in synthetic dataset (CPU)
#   make test   set up .venv and run the whole test suite (pytest + notebooks under nbval)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

demo: setup
	$(BIN)/python -m lib demo

test: setup
	CUT_FAST_MODE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env tests *.ipynb

clean:
	rm -rf $(VENV) demo_output .pytest_cache
