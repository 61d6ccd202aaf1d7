"""LLM-played customers for rollouts: one `LLMUserSimulator` per episode, over a shared cached chat model.

`LLMUserFactory(chat)` is what the rollout runner calls for each episode, ``factory(task, scenario,
seed)``. Every customer reply is asked of `chat` (a `rollout.chat_cache.CachedChat`), keyed by the
scenario id, the conversation so far (as the customer sees it) and a request seed derived from the
episode's seed and the conversation's length: an evaluation repeated with the same seeds and the
same policy replays the customer's replies from the cache, exactly.

A reply that cannot be had (the chat model failed after its retries) raises `UserChatError`: the
runner ends that episode with end reason ``user_error`` and the trainer and the evaluation drop it
(counted as ``user/llm_failures``), after `log` has said which scenario and why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stateset_agents.envs.llm_user import LLMUserSimulator

__all__ = ["LLMUserFactory", "UserChatError", "request_seed"]


class UserChatError(RuntimeError):
    """The simulated customer could not reply; the episode cannot go on (it is dropped, not scored)."""


def request_seed(episode_seed: int | None, conversation_length: int) -> int | None:
    """The sampling seed of one customer reply: fixed by the episode's seed and where the reply falls."""
    if episode_seed is None:
        return None
    return (episode_seed * 1_000_003 + conversation_length) % 2**31  # servers take a 32-bit seed


class LLMUserFactory:
    """Builds the LLM customer of each episode (module docstring)."""

    def __init__(self, chat, *, log: Callable[[str], None] = print, max_reply_chars: int = 600) -> None:
        self.chat = chat
        self.log = log
        self.max_reply_chars = max_reply_chars

    def __call__(self, task: Any, scenario: Mapping[str, Any], seed: int | None) -> LLMUserSimulator:
        scenario_id = str(scenario.get("id", ""))

        async def chat_fn(messages: list[dict[str, Any]]) -> str:
            try:
                return await self.chat.ask(messages, seed=request_seed(seed, len(messages)), scenario=scenario_id)
            except Exception as error:  # noqa: BLE001 - any failure of the model ends this episode only
                message = (f"LLM customer ({self.chat.model.model_id}) could not reply in scenario "
                           f"{scenario_id!r}: {type(error).__name__}: {error}")
                self.log(f"user: episode dropped: {message}")
                raise UserChatError(message) from error

        return LLMUserSimulator(chat_fn, scenario, fact_specs=getattr(task, "fact_specs", None),
                                max_reply_chars=self.max_reply_chars)
