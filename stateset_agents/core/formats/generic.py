"""Any tokenizer's own chat template, with Hermes/Qwen-style ``<tool_call>{json}</tool_call>`` calls
(read by `core.formats.hermes`, the one parser of that syntax)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from stateset_agents.core.completion import ParsedCompletion, ToolCall
from stateset_agents.core.formats.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_call_block
from stateset_agents.core.formats.parsing import THINK_OPEN, parse_completion, split_sections
from stateset_agents.core.messages import validate_messages

__all__ = ["GenericChatFormat"]


class GenericChatFormat:
    """Any tokenizer with a chat template. Parses an optional ``<think>...</think>`` block and
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` calls (ids ``call_IDX``)."""

    def __init__(self, tokenizer: Any, end_of_turn_token: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.end_of_turn_token: str = end_of_turn_token or getattr(tokenizer, "eos_token", None) or ""
        self.special_tokens: list[str] = _markup_tokens(tokenizer)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        thinking: bool = True,
        preserve_thinking: bool | None = None,
    ) -> str:
        """The tokenizer's ``apply_chat_template(..., tokenize=False)``; `thinking` is passed both
        as ``thinking`` and as ``enable_thinking`` (Qwen3); `preserve_thinking` (Kimi, Qwen3.6)
        only when given, so that None leaves the template's own default (Qwen3.8's is true)."""
        options = {} if preserve_thinking is None else {"preserve_thinking": preserve_thinking}
        return self.tokenizer.apply_chat_template(
            validate_messages(messages),
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            thinking=thinking,
            enable_thinking=thinking,
            **options,
        )

    def generation_prompt(self, thinking: bool = True) -> str:
        """What ``add_generation_prompt`` appends (found by rendering a probe conversation)."""
        probe = [{"role": "user", "content": "ping"}]
        with_prompt = self.render(probe, thinking=thinking)
        without = self.render(probe, add_generation_prompt=False, thinking=thinking)
        return with_prompt[len(without) :] if with_prompt.startswith(without) else ""

    @cached_property
    def _prompt_opens_think(self) -> bool:
        try:
            return self.generation_prompt(True).rstrip().endswith(THINK_OPEN)
        except Exception:  # noqa: BLE001 - a template without a generation prompt still parses
            return False

    def parse(self, completion_text: str, thinking: bool = True) -> ParsedCompletion:
        """Split sampled text into reasoning, content and tool calls (stripped). Never raises."""
        return parse_completion(
            completion_text,
            end_of_turn=self.end_of_turn_token,
            starts_inside_think=thinking and self._prompt_opens_think,
            split_tool_calls=_split_generic_tool_calls,
            stray_tokens=self.special_tokens,
            ignorable_after_end=tuple(t for t in (getattr(self.tokenizer, "pad_token", None),) if t),
            strip=True,
        )


def _markup_tokens(tokenizer: Any) -> list[str]:
    """Special tokens plus added tokens that look like markup (``<think>``, ``<tool_call>``)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or [])
    try:
        tokens.update(t for t in tokenizer.get_added_vocab() if t.startswith("<") and t.endswith(">"))
    except Exception:  # noqa: BLE001 - not every tokenizer exposes its added vocabulary
        pass
    return sorted(t for t in tokens if isinstance(t, str) and t)


def _split_generic_tool_calls(text: str, errors: list[str]) -> tuple[str, list[ToolCall]]:
    content, sections = split_sections(text, TOOL_CALL_OPEN, TOOL_CALL_CLOSE, errors)
    return content, [_parse_generic_call(body, index, errors) for index, body in enumerate(sections)]


def _parse_generic_call(body: str, index: int, errors: list[str]) -> ToolCall:
    """One ``<tool_call>`` body -> ToolCall with id ``call_IDX``; an error is also noted in `errors`."""
    call = parse_tool_call_block(body, index)
    if call.error:
        call.error = f"tool call {index} ({call.name or '?'}): {call.error}"
        errors.append(call.error)
    return call
