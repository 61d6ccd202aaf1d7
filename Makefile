# One command for the demo, one for the tests; each creates the environment it needs.
#   make demo   install, build the tiny Kimi-K2.5, fine-tune it with GSPO, report
#   make test   install, run the fast test suite (what CI runs)
# TORCH_SPEC picks the torch build installed first (pip then keeps it): the default pin is the
# CPU wheel on our build machines and the normal (CUDA) wheel from PyPI elsewhere.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[training,dev]"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m stateset_agents.demo

test: install
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: install
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run_benchmarks.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
