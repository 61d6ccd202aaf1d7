"""The environment protocol: what a rollout loop talks to.

An episode, as the caller runs it::

    env = task.make_env(scenario, max_turns=6, seed=seed)
    messages = env.reset()                       # [system, user opening]
    while True:
        turn = ...                               # a ParsedCompletion sampled from the policy
        messages.append(turn.to_message())       # the caller appends the assistant message
        result = env.step(turn)                  # or: await env.astep(turn)
        messages.extend(result.messages)         # tool results, or the user's reply
        if result.done:
            break
    # result.state is the final, JSON-serialisable environment state for the rewards

Environments are single-use: `reset` may be called once, and nothing is shared between two
instances (each deep-copies its scenario and builds its own state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from stateset_agents.core.completion import ParsedCompletion

__all__ = ["Environment", "StepResult", "END_REASONS"]

END_REASONS = ("success", "user_done", "user_gave_up", "max_turns", "context_limit", "")
"""Why an episode ended ('' while it is running). ``user_done``: an LLM user said [DONE] although
the goal was not met in the environment state. ``context_limit``: the rollout ended it because its
next prompt was over the prompt-token limit (`Environment.end`)."""


@dataclass
class StepResult:
    """What comes back after one assistant turn.

    - `messages`: tool-result messages (``{"role": "tool", "tool_call_id", "name", "content"}``)
      when the turn called tools, otherwise the simulated user's reply (one user message).
    - `done`: the episode is over; `reason` is one of `END_REASONS`.
    - `state`: a JSON-serialisable snapshot of the environment state.
    """

    messages: list[dict[str, Any]]
    done: bool
    reason: str = ""
    state: dict[str, Any] = field(default_factory=dict)


class Environment(ABC):
    """A single-use multi-turn conversation environment."""

    max_turns: int

    @abstractmethod
    def reset(self) -> list[dict[str, Any]]:
        """Opening messages: a system message with the task's prompt, then the user's opening."""

    @abstractmethod
    def step(self, turn: ParsedCompletion) -> StepResult:
        """Apply one assistant turn; return what the tools or the user send back."""

    async def astep(self, turn: ParsedCompletion) -> StepResult:
        """Async `step`, for users backed by async chat models. Defaults to `step`."""
        return self.step(turn)

    def end(self, reason: str) -> dict[str, Any]:
        """End the episode from outside (e.g. ``context_limit``); returns the final state snapshot.
        Environments without a state return an empty dict."""
        return {}

    def tool_schemas(self) -> list[dict[str, Any]]:
        """OpenAI-style tool schemas to render into the chat template (none by default)."""
        return []
