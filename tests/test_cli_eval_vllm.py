"""`stateset-agents eval --vllm-url`: the policy samples on a real vLLM server, with the same results.

Greedy (temperature 0) on the tiny base model, served as its vLLM export: every episode's sampled
tokens (the report's per-episode digest) equal those sampled by transformers in-process, so the
two backends evaluate the same policy. A server with another vocabulary is refused before any
episode runs. Skipped without the vLLM environment (`make vllm-env`).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vllm


def run_eval(tmp_path, name: str, *extra: str) -> dict:
    from stateset_agents.cli import main

    out = tmp_path / f"{name}.json"
    code = main(["eval", "--model", "tiny-kimi-k2.5-base", "--task", "customer_service", "--scenarios", "4",
                 "--temperature", "0", "--max-new-tokens", "16", "--max-turns", "2", "--device", "cpu",
                 "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_eval_on_vllm_samples_what_transformers_samples(tiny_base_vllm_server, tmp_path):
    local = run_eval(tmp_path, "hf")
    remote = run_eval(tmp_path, "vllm", "--vllm-url", tiny_base_vllm_server.base_url)
    digests = lambda report: [e["policy"]["sample_sha256"] for e in report["tasks"]["customer_service"]["episodes"]]  # noqa: E731
    assert digests(local) == digests(remote)
    assert local["tasks"]["customer_service"]["policy"] == remote["tasks"]["customer_service"]["policy"]
    assert "POST /v1/completions" in tiny_base_vllm_server.log_path.read_text()
