"""The LLM customer in training and evaluation: the tiny Kimi-K2.5 plays the customer, over HTTP or in-process.

The HTTP tests use a real OpenAI-compatible server on loopback (tests/chat_server.py) whose replies
come from the real tiny model, with failures injected where a test needs them (500 then OK, always
500, one scenario failing); the `vllm` tests use a real vLLM server serving the tiny model's export.
"""

from __future__ import annotations

import json

import pytest

from chat_server import ChatServer, model_answer
from test_trainer import tiny_config

from stateset_agents.envs.llm_user_factory import LLMUserFactory
from stateset_agents.rollout.chat_cache import CachedChat, ChatCache
from stateset_agents.rollout.chat_client import ChatModelError, OpenAIChatClient
from stateset_agents.rollout.runner import USER_ERROR, EpisodeSpec, run_episodes
from stateset_agents.rollout.vllm_client import run_sync
from stateset_agents.runs.metrics import describe_metric
from stateset_agents.tasks.registry import get_task
from stateset_agents.training.evaluation import evaluate

MESSAGES = [{"role": "system", "content": "You are a customer whose order T916 is late."},
            {"role": "user", "content": "Hello, how can I help?"}]


@pytest.fixture(scope="module")
def customer(tiny_model_dir):
    """The tiny model answering chat requests (loaded once for the module's servers)."""
    return model_answer("tiny-kimi-k2.5-base")


def make_factory(url: str, cache_path, *, retries: int = 1, log=None, temperature: float = 0.7):
    client = OpenAIChatClient(url, "tiny-chat", max_retries=retries, retry_backoff=0.01, timeout=60)
    chat = CachedChat(client, ChatCache(cache_path), temperature=temperature, max_tokens=8, kind="user")
    return LLMUserFactory(chat, log=log if log is not None else (lambda _: None)), chat


def ask(client, seed: int = 7) -> str:
    return run_sync(client.complete(MESSAGES, temperature=0.7, max_tokens=8, seed=seed))


def test_a_server_error_then_ok_is_retried(customer):
    with ChatServer(customer, model="tiny-chat", fail_first=2) as server:
        text = ask(OpenAIChatClient(server.base_url, "tiny-chat", max_retries=2, retry_backoff=0.01))
        assert len(server.requests) == 3 and server.failed == 2
        assert text == customer(server.requests[-1])  # the model's seeded reply, not an error text


def test_retries_run_out_and_client_errors_are_not_retried(customer):
    with ChatServer(customer, model="tiny-chat", fail_first=10) as server:
        with pytest.raises(ChatModelError, match=r"failed 3 times \(retries exhausted\).*HTTP 500"):
            ask(OpenAIChatClient(server.base_url, "tiny-chat", max_retries=2, retry_backoff=0.01))
    with ChatServer(customer, model="tiny-chat", fail_first=1, fail_status=400) as server:
        with pytest.raises(ChatModelError, match="HTTP 400 .not retried"):
            ask(OpenAIChatClient(server.base_url, "tiny-chat", max_retries=2, retry_backoff=0.01))
        assert len(server.requests) == 1


def test_the_served_model_is_asked_for_when_none_is_named(customer):
    with ChatServer(customer, model="tiny-chat") as server:
        client = OpenAIChatClient(server.base_url + "/v1", None)
        assert ask(client) == customer(server.requests[-1])
        assert server.requests[-1]["model"] == "tiny-chat" and server.requests[-1]["seed"] == 7


def as_reply(text: str) -> str:
    """What LLMUserSimulator makes of a model's answer (markers removed, stripped, "..." when empty)."""
    done, gave_up = "[DONE]" in text, "[GIVE_UP]" in text
    content = text.replace("[DONE]", "").replace("[GIVE_UP]", "").strip()[:600]
    return content or ("Thanks." if done else "Bye." if gave_up else "...")


def specs_for(task, count: int, seed: int = 11) -> list[EpisodeSpec]:
    return [EpisodeSpec(task, s, group_id=i, seed=seed + i) for i, s in enumerate(task.eval_scenarios()[:count])]


def test_repeat_evaluation_is_identical_from_the_cache(customer, tiny_agent, tmp_path):
    task = get_task("customer_service")
    cache = tmp_path / "llm_cache" / "user.jsonl"
    with ChatServer(customer, model="tiny-chat") as server:
        factory, chat = make_factory(server.base_url, cache)
        first, _ = run_episodes(tiny_agent, specs_for(task, 1), max_turns=2, user_factory=factory, max_new_tokens=8)
        summary = evaluate(tiny_agent, task, task.eval_scenarios()[:2], task.default_reward(), max_turns=2,
                           user_factory=factory, max_new_tokens=8)
        served = len(server.requests)
    assert served == chat.requests > 0 and summary["user_failures"] == 0
    replies = [m["content"] for t in first for m in t.messages[2:] if m["role"] == "user"]
    answers = {as_reply(json.loads(line)["text"]) for line in cache.read_text().splitlines()}
    assert replies and set(replies) <= answers
    # the server is gone: a new run over the same cache file replays every reply, so nothing changes
    factory, chat = make_factory(server.base_url, cache, retries=0)
    again, _ = run_episodes(tiny_agent, specs_for(task, 1), max_turns=2, user_factory=factory, max_new_tokens=8)
    repeat = evaluate(tiny_agent, task, task.eval_scenarios()[:2], task.default_reward(), max_turns=2,
                      user_factory=factory, max_new_tokens=8)
    assert [t.messages for t in again] == [t.messages for t in first]
    assert repeat == summary
    assert chat.requests == 0 and chat.cache_hits == served


def test_a_server_always_failing_drops_the_episodes_with_a_logged_reason(customer, tiny_agent, tmp_path):
    task = get_task("customer_service")
    logged: list[str] = []
    with ChatServer(customer, model="tiny-chat", fail_when=lambda body: True) as server:
        factory, chat = make_factory(server.base_url, tmp_path / "user.jsonl", retries=1, log=logged.append)
        trajectories, _ = run_episodes(tiny_agent, specs_for(task, 3), max_turns=2, user_factory=factory,
                                       max_new_tokens=8)
        summary = evaluate(tiny_agent, task, task.eval_scenarios()[:3], task.default_reward(), max_turns=2,
                           user_factory=factory, max_new_tokens=8)
    dropped = [t for t in trajectories if t.end_reason == USER_ERROR]
    assert dropped, "every reply fails: an episode that reached its customer must be dropped"
    assert all(t.end_reason in (USER_ERROR, "max_turns") for t in trajectories)
    assert all("HTTP 500" in t.state["user_error"] for t in dropped)
    assert summary["user_failures"] >= 1 and summary["episodes"] == 3 - summary["user_failures"]
    failures = len(dropped) + summary["user_failures"]
    assert chat.failures == failures and len(server.requests) == 2 * failures  # one retry each
    assert len(logged) == failures and all("episode dropped" in line and "scenario" in line for line in logged)
    ids = {t.scenario["id"] for t in dropped}
    assert all(any(repr(i) in line for line in logged) for i in ids)


def test_one_training_iteration_with_the_customer_over_http(customer, tmp_path):
    """One scenario's customer always fails (its group is dropped, counted and logged); the rest trains."""
    from stateset_agents.training.trainer import GSPOTrainer

    failing: list[str] = []

    def fail_first_scenario(body: dict) -> bool:
        brief = body["messages"][0]["content"]
        failing[:] = failing or [brief]
        return brief == failing[0]

    logged: list[str] = []
    with ChatServer(customer, model="tiny-chat", fail_when=fail_first_scenario) as server:
        config = tiny_config(tmp_path, num_outer_iterations=1, save_every=0, eval_every=1, eval_scenarios=1,
                             user_simulator="llm", user_model_url=server.base_url, user_model="tiny-chat",
                             user_max_tokens=8, llm_max_retries=1, llm_retry_backoff=0.01)
        trainer = GSPOTrainer(config, log=logged.append)
        metrics = trainer.train().history[0]
    failed_calls = server.failed // 2  # each failed call = the request + one retry
    assert metrics["user/llm_failures"] == failed_calls >= 1
    assert metrics["episode/end_reasons/user_error"] == failed_calls
    calls = trainer.llm.user_chat.requests  # the iteration's and then the evaluation's
    assert calls == len(server.requests) - failed_calls and failed_calls < metrics["user/llm_requests"] < calls
    assert metrics["rewards/skipped"] == 0 and metrics["optimizer_steps"] >= 1
    assert metrics["eval/user_failures"] == 0  # the evaluation scenario's customer answers
    assert sum("episode dropped" in line for line in logged) == failed_calls
    for key in ["user/llm_requests", "user/llm_cache_hits", "user/llm_failures", "episode/end_reasons/user_error",
                "eval/user_failures"]:
        assert describe_metric(key), f"{key} is logged but not documented"
    cached = (tmp_path / "run" / "llm_cache" / "user.jsonl").read_text().splitlines()
    assert len(cached) == len(server.requests) - server.failed  # every answer that came back, once


def test_one_training_iteration_with_the_customer_in_process(tmp_path, tiny_model_dir):
    from stateset_agents.training.trainer import GSPOTrainer

    config = tiny_config(tmp_path, num_outer_iterations=1, save_every=0, scenarios_per_iteration=1,
                         user_simulator="llm", user_model="tiny-kimi-k2.5-base", user_max_tokens=8)
    trainer = GSPOTrainer(config, log=lambda _: None)
    metrics = trainer.train().history[0]
    assert metrics["user/llm_requests"] >= 1 and metrics["user/llm_failures"] == 0
    assert trainer.llm.user_chat.model.agent.model is not trainer.policy  # a model of its own
    cached = (tmp_path / "run" / "llm_cache" / "user.jsonl").read_text().splitlines()
    assert len(cached) == metrics["user/llm_requests"]


def test_a_dead_customer_endpoint_fails_the_run_at_start(tmp_path):
    from stateset_agents.training.trainer import GSPOTrainer

    config = tiny_config(tmp_path, user_simulator="llm", user_model_url="http://127.0.0.1:9", llm_max_retries=0)
    with pytest.raises(ChatModelError, match=r"LLM customer .*127\.0\.0\.1:9.*Start the server"):
        GSPOTrainer(config, log=lambda _: None)


def test_the_flags_reach_the_config(tmp_path):
    import argparse

    from stateset_agents.cli import add_training_flags, config_from_args

    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    args = parser.parse_args([
        "--output-dir", str(tmp_path / "run"), "--user-simulator", "llm", "--user-model-url", "http://127.0.0.1:8001",
        "--user-model", "customer", "--reward", "my_rewards:KimiReward", "--judge-model-url", "http://127.0.0.1:8002",
        "--judge-model", "judge", "--judge-weight", "0.3", "--judge-mode", "group"])
    config = config_from_args(args)
    assert (config.user_simulator, config.user_model_url, config.user_model) == ("llm", "http://127.0.0.1:8001",
                                                                                 "customer")
    assert (config.reward, config.judge_model_url, config.judge_model, config.judge_weight, config.judge_mode) == (
        "my_rewards:KimiReward", "http://127.0.0.1:8002", "judge", 0.3, "group")
