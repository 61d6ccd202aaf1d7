"""The LLM customer and the LLM judge against a real vLLM server (CPU build) serving the tiny Kimi-K2.5.

One server for the module (~40-60 s to start on 2 cores), the tiny base model's export. The customer:
one training iteration with `user_model_url` (the served model found through /v1/models), and an
evaluation whose replies vLLM samples with the seeds we send (two fresh caches get the same replies;
a third run over the first cache asks nothing). The judge: the tiny model cannot produce the JSON
asked for, so its answers are logged skips, the same ones every time (temperature 0). Skipped, with
the reason, without the vLLM environment (`make vllm-env`).
"""

from __future__ import annotations

import pytest

from test_llm_judge import REFUNDED, RUBRIC, WAITING, episode
from test_trainer import tiny_config

pytestmark = pytest.mark.vllm


def test_one_training_iteration_with_a_vllm_customer(tiny_base_vllm_server, tmp_path):
    from stateset_agents.training.trainer import GSPOTrainer

    config = tiny_config(tmp_path, num_outer_iterations=1, save_every=0, user_simulator="llm",
                         user_model_url=tiny_base_vllm_server.base_url, user_max_tokens=16)
    trainer = GSPOTrainer(config, log=print)
    metrics = trainer.train().history[0]
    assert metrics["user/llm_failures"] == 0 and metrics["user/llm_requests"] >= 1
    assert "POST /v1/chat/completions" in tiny_base_vllm_server.log_path.read_text()
    assert trainer.llm.user_chat.model.model  # the served name, asked of /v1/models


def test_vllm_customer_replies_are_seeded_and_a_repeat_evaluation_replays_them(tiny_base_vllm_server, tiny_agent, tmp_path):
    from test_llm_user_training import make_factory

    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.evaluation import evaluate

    task = get_task("customer_service")
    scenarios = task.eval_scenarios()[:2]

    def run(cache_name: str):
        factory, chat = make_factory(tiny_base_vllm_server.base_url, tmp_path / cache_name, temperature=0.7)
        chat.model.model = None  # the served model, whatever its name
        summary = evaluate(tiny_agent, task, scenarios, task.default_reward(), max_turns=2, user_factory=factory,
                           max_new_tokens=8)
        return summary, chat

    first, chat_a = run("a.jsonl")
    second, chat_b = run("b.jsonl")  # a fresh cache: vLLM samples again, with the same seeds
    assert chat_a.requests == chat_b.requests > 0 and first["user_failures"] == 0
    assert sorted((tmp_path / "a.jsonl").read_text().splitlines()) == sorted(
        (tmp_path / "b.jsonl").read_text().splitlines())
    assert second == first
    third, chat_c = run("a.jsonl")
    assert third == first and chat_c.requests == 0 and chat_c.cache_hits == chat_a.requests


def test_the_tiny_model_as_judge_gives_logged_skips_the_same_every_time(tiny_base_vllm_server, tmp_path):
    from stateset_agents.rewards.batch_rewards import score_trajectories_sync
    from stateset_agents.rewards.components import PolicyCompliance
    from stateset_agents.rewards.llm_judge import LLMJudge
    from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
    from stateset_agents.rollout.chat_cache import CachedChat, ChatCache
    from stateset_agents.rollout.chat_client import OpenAIChatClient

    def judge_once(cache_name: str):
        logged: list[str] = []
        chat = CachedChat(OpenAIChatClient(tiny_base_vllm_server.base_url), ChatCache(tmp_path / cache_name),
                          temperature=0.0, max_tokens=48, kind="judge")
        judge = LLMJudge(chat, RUBRIC, "pointwise", seed=1, log=logged.append)
        results = score_trajectories_sync(MultiObjectiveReward([PolicyCompliance(), judge]),
                                          [episode(REFUNDED), episode(WAITING)], error_policy="fail")
        return [r.components.get("llm_judge") for r in results], judge.skipped, logged

    scores, skipped, logged = judge_once("a.jsonl")
    assert skipped == sum(score is None for score in scores) == len(logged)
    assert all(score is None or 0.0 <= score <= 1.0 for score in scores)
    print(f"tiny judge over vLLM: {skipped} of 2 skipped; {logged[:1]}")
    assert judge_once("b.jsonl")[:2] == (scores, skipped)  # greedy: the same answers from a fresh cache
