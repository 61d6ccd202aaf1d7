"""What a sampled assistant turn means once parsed.

A `ParsedCompletion` is produced by a chat format's parser from the *decoded text* of the sampled
token ids. It is for environments and rewards only: training always uses the token ids themselves.
Parsers never raise on model output; problems are recorded in `errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    """One tool call requested by the model.

    `arguments` is the decoded JSON object, or None when `raw_arguments` was not a JSON object
    (then `error` says why). `id` follows the format's convention (Kimi: ``functions.NAME:IDX``).
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str = ""
    error: str | None = None

    def to_message_dict(self) -> dict[str, Any]:
        """OpenAI-style ``tool_calls`` entry, as stored in an assistant message."""
        import json

        # keep the sampled text: re-dumping would change spacing/escapes of what the model wrote
        args = self.raw_arguments or json.dumps(self.arguments or {}, ensure_ascii=False)
        # a call whose name could not be read keeps its raw id as name, so the history stays valid
        name = self.name or self.id or "unknown"
        return {"id": self.id or name, "type": "function", "function": {"name": name, "arguments": args}}


@dataclass
class ParsedCompletion:
    """A sampled assistant turn split into its parts.

    - `reasoning`: text of the think block (None when the turn had none).
    - `content`: the visible answer, special tokens removed.
    - `tool_calls`: parsed tool calls, in order.
    - `thinking_closed`: False when a think block was opened but never closed (truncated).
    - `terminated`: True when the turn ended with the format's end-of-turn token.
    - `errors`: human-readable notes on anything malformed (broken JSON, stray tokens).
    """

    reasoning: str | None = None
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    thinking_closed: bool = True
    terminated: bool = True
    errors: list[str] = field(default_factory=list)
    raw_text: str = ""

    @property
    def well_formed(self) -> bool:
        """Closed thinking, terminated, no parse errors."""
        return self.thinking_closed and self.terminated and not self.errors

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation history."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [call.to_message_dict() for call in self.tool_calls]
        return message
