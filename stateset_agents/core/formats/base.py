"""What every chat format provides, and the reasoning field of an assistant message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from stateset_agents.core.completion import ParsedCompletion

__all__ = ["ChatFormat", "REASONING_KEYS", "message_reasoning"]

# transformers copies these older names into `reasoning_content` before rendering; so do we.
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


class ChatFormat(Protocol):
    """What the rollout and training code needs from a chat format."""

    end_of_turn_token: str
    special_tokens: list[str]

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        thinking: bool = True,
        preserve_thinking: bool | None = None,
    ) -> str: ...

    def generation_prompt(self, thinking: bool = True) -> str: ...

    def parse(self, completion_text: str, thinking: bool = True) -> ParsedCompletion: ...


def message_reasoning(message: Mapping[str, Any]) -> Any:
    """The message's reasoning under its first non-None name (as transformers aliases it)."""
    return next((message[key] for key in REASONING_KEYS if message.get(key) is not None), None)

