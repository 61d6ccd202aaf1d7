"""From the config to the run's LLM customer, LLM judge and reward (docs/llm_user_and_judge.md).

`LLMServices(config, output_dir, ...)` builds, once per run:

- `user_factory`: with ``user_simulator: llm``, the `LLMUserFactory` the rollout runner asks for each
  episode's customer (None with the rule-based user);
- `judge`: with ``judge_weight > 0``, the `LLMJudge` added to each task's reward;
- `reward_for(task)`: the reward of a task: the Python `reward_fn` given to the trainer, else the
  config's ``reward: module:Class``, else ``task.default_reward()``; plus the judge when it is on.

The chat models answer from caches under ``output_dir/llm_cache/`` (``user.jsonl``, ``judge.jsonl``;
``NAME.rankN.jsonl`` on rank N > 0), so a resumed run or a repeated evaluation replays the same answers.
A server named by URL is asked for its models when the run starts, so a wrong URL fails at once
instead of dropping every episode. `metrics(trajectories)` returns the iteration's counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stateset_agents.rollout.runner import USER_ERROR

__all__ = ["LLMServices", "chat_model"]

CACHE_DIRNAME = "llm_cache"


def chat_model(url: str | None, model: str | None, config, *, device: str):
    """An `OpenAIChatClient` for `url`, or without one a `LocalChatModel` running `model` here."""
    from stateset_agents.rollout.chat_client import LocalChatModel, OpenAIChatClient

    if url:
        return OpenAIChatClient(url, model, concurrency=config.llm_concurrency, max_retries=config.llm_max_retries,
                                retry_backoff=config.llm_retry_backoff, timeout=config.llm_timeout)
    return LocalChatModel(model, device=device, trust_remote_code=config.trust_remote_code)


def check_reachable(model, role: str) -> None:
    """Ask a server's /v1/models once (connection and status errors retried like any request)."""
    from stateset_agents.rollout.chat_client import ChatModelError, OpenAIChatClient
    from stateset_agents.rollout.vllm_client import run_sync

    if not isinstance(model, OpenAIChatClient):
        return
    try:
        served = run_sync(model.list_models())
    except ChatModelError as error:
        raise ChatModelError(f"the {role} endpoint cannot be used: {error}. Start the server (e.g. `python -m "
                             f"vllm.entrypoints.openai.api_server --model MODEL --port PORT`) or fix the URL") from None
    if model.model is not None and model.model not in served:
        raise ChatModelError(f"the {role} endpoint {model.base_url} serves {served or 'no model'}, not "
                             f"{model.model!r}: fix the model name, or leave it unset for the served one")


class LLMServices:
    """The run's LLM customer, judge and rewards (module docstring)."""

    def __init__(self, config, output_dir: str | Path, *, device: str = "cpu", rank: int = 0,
                 custom_reward: Any = None, log: Callable[[str], None] = print) -> None:
        from stateset_agents.envs.llm_user_factory import LLMUserFactory
        from stateset_agents.rewards.llm_judge import LLMJudge, load_rubric
        from stateset_agents.rollout.chat_cache import CachedChat, ChatCache

        self.config = config
        self.custom_reward = custom_reward
        self.log = log
        suffix = f".rank{rank}" if rank else ""
        cache_dir = Path(output_dir) / CACHE_DIRNAME
        self.user_factory = self.judge = None
        self.user_chat = self.judge_chat = None
        rubric = load_rubric(config.judge_rubric)  # a bad rubric fails before any model loads
        if config.user_simulator == "llm":
            model = chat_model(config.user_model_url, config.user_model, config, device=device)
            check_reachable(model, "LLM customer (user_model_url)")
            self.user_chat = CachedChat(model, ChatCache(cache_dir / f"user{suffix}.jsonl"),
                                        temperature=config.user_temperature, max_tokens=config.user_max_tokens,
                                        kind="user")
            self.user_factory = LLMUserFactory(self.user_chat, log=log)
        if config.judge_weight > 0:
            model = chat_model(config.judge_model_url, config.judge_model, config, device=device)
            check_reachable(model, "LLM judge (judge_model_url)")
            self.judge_chat = CachedChat(model, ChatCache(cache_dir / f"judge{suffix}.jsonl"),
                                         temperature=config.judge_temperature, max_tokens=config.judge_max_tokens,
                                         kind="judge")
            self.judge = LLMJudge(self.judge_chat, rubric, config.judge_mode, seed=config.seed, log=log)
        self._rewards: dict[str, Any] = {}
        self._seen: dict[str, int] = {}

    def reward_for(self, task) -> Any:
        """The task's reward (module docstring); built once per task."""
        from stateset_agents.rewards.custom_reward import RewardLoadError, load_reward
        from stateset_agents.rewards.llm_judge import with_judge

        if task.name not in self._rewards:
            reward = self.custom_reward
            if reward is None and self.config.reward:
                reward = load_reward(self.config.reward, task)
            if reward is None:
                reward = task.default_reward()
            if self.judge is not None:
                try:
                    reward = with_judge(reward, self.judge, self.config.judge_weight)
                except TypeError as error:  # a function or non-MultiObjectiveReward class: say which setting
                    raise RewardLoadError(f"judge_weight={self.config.judge_weight} with reward "
                                          f"{self.config.reward or type(reward).__name__!r}: {error}") from None
            self._rewards[task.name] = reward
        return self._rewards[task.name]

    def metrics(self, trajectories: Sequence[Any]) -> dict[str, float]:
        """This iteration's counts (since the previous call): LLM customer requests, cache hits and dropped
        episodes; judge requests, cache hits and skipped episodes. Empty when neither is on."""
        metrics: dict[str, float] = {}
        if self.user_chat is not None:
            metrics["user/llm_requests"] = self._delta("user_requests", self.user_chat.requests)
            metrics["user/llm_cache_hits"] = self._delta("user_hits", self.user_chat.cache_hits)
            metrics["user/llm_failures"] = sum(t.end_reason == USER_ERROR for t in trajectories)
        if self.judge is not None:
            metrics["judge/requests"] = self._delta("judge_requests", self.judge_chat.requests)
            metrics["judge/cache_hits"] = self._delta("judge_hits", self.judge_chat.cache_hits)
            metrics["judge/skipped"] = self._delta("judge_skipped", self.judge.skipped)
        return metrics

    def _delta(self, name: str, total: int) -> int:
        delta = total - self._seen.get(name, 0)
        self._seen[name] = total
        return delta
