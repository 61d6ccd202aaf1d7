"""Kimi-K2.5's chat format: `KimiChatFormat` renders and parses it in plain Python;
`KIMI_CHAT_TEMPLATE` is the same format as a jinja chat template for a Hugging Face tokenizer (the
two are golden-tested to render identically).

What the checkpoint renders (``chat_template.jinja`` with the wrapper in ``tokenization_kimi.py``;
tinker-cookbook's ``renderers/kimi_k25.py`` + ``kimi_k2.py`` reproduce it and are tested against it):

- tools: ``<|im_system|>tool_declare<|im_middle|>{TypeScript declaration}<|im_end|>`` first
  (`core.formats.kimi_tools`), then the default system prompt when the conversation has none;
- turns: ``<|im_system|>system``, ``<|im_user|>user``, ``<|im_assistant|>assistant``, each
  ``<|im_middle|>...<|im_end|>``; a tool result is ``<|im_system|>{name or "tool"}<|im_middle|>``
  ``## Return of {tool_call_id}\n{content}<|im_end|>``; an image part is
  ``<|media_begin|>image<|media_content|><|media_pad|><|media_end|>`` and a newline;
- assistant turns: ``<think>{reasoning}</think>{content}[tool-call section]<|im_end|>``. The
  template splits the conversation after the last assistant message *without* tool calls: that
  message and everything before it are history, whose reasoning is emptied (``<think></think>``);
  assistant messages after it (the tool-calling turns of the turn in progress) keep theirs, unless
  ``thinking`` is false. ``preserve_thinking=True`` keeps every message's reasoning (the K2.6
  template's flag; tinker-cookbook's ``strip_thinking_from_history=False``); our reading is that
  it also wins over ``thinking=False``, as OpenPipe ART's patch of the K2.5 template does. So a
  finished conversation re-rendered without a generation prompt loses its last answer's reasoning
  (the checkpoint does this too): training data is built per turn, never by re-rendering.
- generation prompt: ``<|im_assistant|>assistant<|im_middle|><think>`` with thinking, else
  ``...<think></think>``.

Our reading where the published sources leave it open: the JSON fallback for tools the TypeScript
encoder rejects is compact (``separators=(",", ":")``, non-ASCII kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stateset_agents.core.completion import ParsedCompletion, ToolCall
from stateset_agents.core.formats.base import message_reasoning
from stateset_agents.core.formats.kimi_tools import KIMI_TOOLS_JINJA, deep_sort, tool_declaration
from stateset_agents.core.formats.parsing import (
    THINK_CLOSE,
    THINK_OPEN,
    decode_arguments,
    parse_completion,
    split_sections,
)
from stateset_agents.core.messages import content_parts, is_image_part, validate_messages

__all__ = ["KIMI_CHAT_TEMPLATE", "KimiChatFormat"]

# Kimi-K2.5 special tokens.
BOS, EOS, PAD = "[BOS]", "[EOS]", "[PAD]"
IM_SYSTEM, IM_USER, IM_ASSISTANT = "<|im_system|>", "<|im_user|>", "<|im_assistant|>"
IM_MIDDLE, IM_END = "<|im_middle|>", "<|im_end|>"
TOOL_SECTION_BEGIN, TOOL_SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN, TOOL_CALL_ARGS = "<|tool_call_begin|>", "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"
MEDIA_BEGIN, MEDIA_CONTENT = "<|media_begin|>", "<|media_content|>"
MEDIA_PAD, MEDIA_END = "<|media_pad|>", "<|media_end|>"
KIMI_DEFAULT_SYSTEM_PROMPT = "You are Kimi, an AI assistant created by Moonshot AI."
KIMI_IMAGE_PLACEHOLDER = f"{MEDIA_BEGIN}image{MEDIA_CONTENT}{MEDIA_PAD}{MEDIA_END}\n"

KIMI_CHAT_TEMPLATE = KIMI_TOOLS_JINJA + r"""
{%- macro render_content(content) -%}
  {%- if content is string -%}{{ content }}
  {%- elif content is iterable and content is not mapping -%}
    {%- for part in content -%}
      {%- if part['type'] == 'text' -%}{{ part['text'] }}
      {%- elif part['type'] in ['image', 'image_url'] -%}
        {{- '<|media_begin|>image<|media_content|><|media_pad|><|media_end|>\n' -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- set thinking = thinking if thinking is defined else true -%}
{%- set preserve_thinking = preserve_thinking if preserve_thinking is defined else false -%}
{%- if tools -%}
<|im_system|>tool_declare<|im_middle|>
  {%- if tools_ts_str is defined and tools_ts_str -%}{{ tools_ts_str }}
  {%- else -%}{{ ts_declaration(tools) }}
  {%- endif -%}
<|im_end|>
{%- endif -%}
{%- if not messages or messages[0]['role'] != 'system' -%}
<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>
{%- endif -%}
{%- set ns = namespace(last_answer=-1) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'assistant' and not message['tool_calls'] -%}{%- set ns.last_answer = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}
<|im_system|>system<|im_middle|>{{ render_content(message['content']) }}<|im_end|>
  {%- elif message['role'] == 'user' -%}
<|im_user|>user<|im_middle|>{{ render_content(message['content']) }}<|im_end|>
  {%- elif message['role'] == 'assistant' -%}
<|im_assistant|>assistant<|im_middle|><think>
    {%- if message['reasoning_content'] is string and (preserve_thinking or (thinking and loop.index0 > ns.last_answer)) -%}
      {{ message['reasoning_content'] }}
    {%- endif -%}
</think>{{ render_content(message['content']) }}
    {%- if message['tool_calls'] -%}
<|tool_calls_section_begin|>
      {%- for call in message['tool_calls'] -%}
        {%- set function = call['function'] -%}
<|tool_call_begin|>
        {%- if call['id'] -%}{{ call['id'] }}{%- else -%}functions.{{ function['name'] }}:{{ loop.index0 }}{%- endif -%}
<|tool_call_argument_begin|>
        {%- if function['arguments'] is string -%}{{ function['arguments'] }}
        {%- else -%}{{ function['arguments'] | tojson }}
        {%- endif -%}
<|tool_call_end|>
      {%- endfor -%}
<|tool_calls_section_end|>
    {%- endif -%}
<|im_end|>
  {%- elif message['role'] == 'tool' -%}
<|im_system|>{{ message['name'] or 'tool' }}<|im_middle|>## Return of {{ message['tool_call_id'] }}{{ '\n' }}
    {{- render_content(message['content']) }}<|im_end|>
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_assistant|>assistant<|im_middle|>{%- if thinking -%}<think>{%- else -%}<think></think>{%- endif -%}
{%- endif -%}
"""
"""Kimi-K2.5's chat format as a jinja template (``tokenizer.chat_template``). Variables: ``tools``,
``tools_ts_str`` (used as the tool declaration when given, as the checkpoint's template does),
``add_generation_prompt``, ``thinking`` (default true) and ``preserve_thinking`` (default false).
Without ``tools_ts_str`` the template writes the TypeScript declaration itself (`KIMI_TOOLS_JINJA`),
so a tokenizer without the checkpoint's remote code renders what the checkpoint renders."""

class KimiChatFormat:
    """Kimi-K2.5's chat format: rendering (identical to `KIMI_CHAT_TEMPLATE`) and parsing.
    `preserve_thinking`: the default for `render` (the checkpoint's default is False)."""

    end_of_turn_token = IM_END
    special_tokens = [
        BOS, EOS, PAD, IM_END, IM_USER, IM_ASSISTANT, IM_SYSTEM, IM_MIDDLE, THINK_OPEN, THINK_CLOSE,
        TOOL_SECTION_BEGIN, TOOL_SECTION_END, TOOL_CALL_BEGIN, TOOL_CALL_ARGS, TOOL_CALL_END,
        MEDIA_BEGIN, MEDIA_CONTENT, MEDIA_PAD, MEDIA_END,
    ]  # fmt: skip
    chat_template = KIMI_CHAT_TEMPLATE

    def __init__(self, preserve_thinking: bool = False) -> None:
        self.preserve_thinking = preserve_thinking

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        thinking: bool = True,
        preserve_thinking: bool | None = None,
    ) -> str:
        """The prompt text for `messages` (validated first), exactly as the jinja template (and the
        checkpoint's tokenizer) renders it. `preserve_thinking` None: the format's default."""
        messages = validate_messages(messages)
        preserve = self.preserve_thinking if preserve_thinking is None else preserve_thinking
        pieces = []
        if tools:
            pieces.append(_turn(IM_SYSTEM, "tool_declare", tool_declaration(deep_sort(tools))))
        if messages[0]["role"] != "system":
            pieces.append(_turn(IM_SYSTEM, "system", KIMI_DEFAULT_SYSTEM_PROMPT))
        last_answer = max(
            (i for i, m in enumerate(messages) if m["role"] == "assistant" and not m.get("tool_calls")), default=-1
        )
        for index, message in enumerate(messages):
            keep = preserve or (thinking and index > last_answer)
            pieces.append(self.render_message(message, current_turn=keep))
        if add_generation_prompt:
            pieces.append(self.generation_prompt(thinking))
        return "".join(pieces)

    def render_message(self, message: Mapping[str, Any], current_turn: bool = True) -> str:
        """One message as a full turn. `current_turn`: an assistant message whose reasoning is kept
        (one after the last answer without tool calls; history gets an empty think block)."""
        role = message["role"]
        if role == "system":
            return _turn(IM_SYSTEM, "system", _render_content(message))
        if role == "user":
            return _turn(IM_USER, "user", _render_content(message))
        if role == "tool":
            body = f"## Return of {message['tool_call_id']}\n{_render_content(message)}"
            return _turn(IM_SYSTEM, message.get("name") or "tool", body)
        return self.generation_prompt(thinking=True) + self.render_completion(message, current_turn)

    def render_completion(self, message: Mapping[str, Any], current_turn: bool = True) -> str:
        """An assistant message as sampled after the thinking generation prompt:
        ``REASONING</think>CONTENT[tool-call section]<|im_end|>``."""
        reasoning = message_reasoning(message)
        shown = reasoning if current_turn and isinstance(reasoning, str) else ""
        calls = message.get("tool_calls") or []
        section = "".join(map(_render_tool_call, calls, range(len(calls))))
        if section:
            section = TOOL_SECTION_BEGIN + section + TOOL_SECTION_END
        return shown + THINK_CLOSE + _render_content(message) + section + IM_END

    def generation_prompt(self, thinking: bool = True) -> str:
        """The assistant header the model continues from; opens the think block when thinking."""
        return IM_ASSISTANT + "assistant" + IM_MIDDLE + THINK_OPEN + ("" if thinking else THINK_CLOSE)

    def parse(self, completion_text: str, thinking: bool = True) -> ParsedCompletion:
        """Split sampled text (decoded with special tokens) into reasoning, content and tool
        calls. With `thinking` the text starts inside the think block. Never raises."""
        return parse_completion(
            completion_text,
            end_of_turn=IM_END,
            starts_inside_think=thinking,
            split_tool_calls=_split_kimi_tool_calls,
            stray_tokens=self.special_tokens,
            ignorable_after_end=(EOS, PAD),
        )


def kimi_temperature(thinking: bool) -> float:
    """Kimi's advised sampling temperature: 1.0 with thinking, 0.6 without (the value a temperature of
    None stands for in `AgentConfig` and `TrainingConfig`)."""
    return 1.0 if thinking else 0.6


def _turn(opener: str, name: str, body: str) -> str:
    return f"{opener}{name}{IM_MIDDLE}{body}{IM_END}"


def _render_content(message: Mapping[str, Any]) -> str:
    """Text parts verbatim, each image as one media placeholder."""
    pieces = []
    for part in content_parts(message):
        if part.get("type") == "text":
            pieces.append(part["text"])
        elif is_image_part(part):
            pieces.append(KIMI_IMAGE_PLACEHOLDER)
    return "".join(pieces)


def _render_tool_call(call: Mapping[str, Any], index: int) -> str:
    function = call["function"]
    call_id = call.get("id") or f"functions.{function['name']}:{index}"
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f"{TOOL_CALL_BEGIN}{call_id}{TOOL_CALL_ARGS}{arguments}{TOOL_CALL_END}"


def _split_kimi_tool_calls(text: str, errors: list[str]) -> tuple[str, list[ToolCall]]:
    """Content outside ``<|tool_calls_section_begin|>`` sections, and the calls inside them."""
    content, sections = split_sections(text, TOOL_SECTION_BEGIN, TOOL_SECTION_END, errors)
    calls: list[ToolCall] = []
    for section in sections:
        chunks = section.split(TOOL_CALL_BEGIN)
        if chunks[0].strip():
            errors.append(f"unexpected text in the tool-call section: {chunks[0][:80]!r}")
        first = len(calls)
        calls.extend([_parse_kimi_call(chunk, first + i, errors) for i, chunk in enumerate(chunks[1:])])
    return content, calls


def _parse_kimi_call(chunk: str, index: int, errors: list[str]) -> ToolCall:
    """``functions.NAME:IDX<|tool_call_argument_begin|>{json}<|tool_call_end|>`` -> ToolCall."""
    body, ended, trailing = chunk.partition(TOOL_CALL_END)
    if not ended:
        errors.append(f"tool call {index} was not closed with {TOOL_CALL_END}")
    elif trailing.strip():
        errors.append(f"unexpected text after tool call {index}: {trailing[:80]!r}")
    call_id, has_args, raw_arguments = body.partition(TOOL_CALL_ARGS)
    call_id = call_id.strip()
    name = _name_from_kimi_id(call_id)
    if not name:
        errors.append(f"tool call {index} has an unreadable id {call_id[:80]!r} (expected functions.NAME:IDX)")
    error = None if has_args else f"tool call {index} ({name or '?'}) has no {TOOL_CALL_ARGS}"
    arguments = None
    if has_args:
        arguments, error = decode_arguments(raw_arguments)
        error = error and f"tool call {index} ({name or '?'}): {error}"
    if error:
        errors.append(error)
    # an empty id still needs a handle: the tool's reply must name the call it answers
    call_id = call_id or f"functions.unknown:{index}"
    return ToolCall(id=call_id, name=name, arguments=arguments, raw_arguments=raw_arguments, error=error)


def _name_from_kimi_id(call_id: str) -> str:
    """``functions.get_weather:0`` -> ``get_weather`` (a bare name is accepted as is)."""
    name = call_id.removeprefix("functions.")
    head, colon, tail = name.rpartition(":")
    if colon and tail.isdigit():
        name = head
    return "" if "<|" in name or "|>" in name else name.strip()
