"""Shared fixtures: one tiny Kimi-K2.5 built per machine (cached under .cache/), loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("STATESET_AGENTS_CACHE", str(REPO / ".cache" / "test-models"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STATESET_AGENTS_NO_SHIPPED", "1")  # tests build their own models, never the shipped copy
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on two cores: one torch thread each, or their thread pools
    # spin against each other (OMP_NUM_THREADS also reaches the subprocesses the tests start)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two pytest-xdist workers. Each module runs whole in one worker (its module and session
    fixtures are built once per worker, not per test), and the modules named *vllm* run in the same worker:
    they share the session's vLLM server (`tiny_base_vllm_server`), which then starts once."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "vllm" if "vllm" in Path(module).name else module

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from stateset_agents.embedded import ensure_embedded_model

    return ensure_embedded_model("tiny-kimi-k2.5-base")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from stateset_agents.models.loading import LoadSettings, load_model

    return load_model(str(tiny_model_dir), LoadSettings(device="cpu"))


@pytest.fixture()
def tiny_agent(tiny_loaded):
    from stateset_agents.rollout.agent import Agent, AgentConfig

    config = AgentConfig(model_name="tiny-kimi-k2.5-base", system_prompt="You are a support agent.",
                         max_new_tokens=24, model_kwargs={"chat_template_kwargs": {"thinking": True}})
    return Agent(config, loaded=tiny_loaded)


@pytest.fixture(scope="session")
def vllm_python():
    """The vLLM environment's interpreter (`make vllm-env`), or the test is skipped saying how to build it."""
    from stateset_agents.rollout.vllm_server import VLLMNotAvailableError, find_vllm_python

    try:
        return find_vllm_python()
    except VLLMNotAvailableError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def tiny_base_vllm_server(tmp_path_factory, tiny_model_dir, vllm_python):
    """One vLLM server on loopback for the session, serving the export of `tiny_model_dir` (max_model_len 2048):
    the modules that only need *a* server on the base model share it (each start costs ~40 s on 2 cores)."""
    from stateset_agents.models.export import export_for_vllm
    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.rollout.vllm_server import VLLMServer, VLLMServerSettings

    root = tmp_path_factory.mktemp("tiny-base-vllm")
    loaded = load_model(str(tiny_model_dir), LoadSettings(device="cpu", dtype="float32"))
    export = export_for_vllm(loaded.model, loaded.tokenizer, root / "export")
    with VLLMServer(export, root / "server.log", VLLMServerSettings(max_model_len=2048), python=vllm_python) as server:
        yield server
