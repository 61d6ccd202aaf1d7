"""Chat formats: turn messages into prompt text, and sampled completion text into its parts.

`KimiChatFormat` reproduces Kimi-K2.5's chat format in plain Python; `KIMI_CHAT_TEMPLATE` is the
same format as a jinja chat template for a Hugging Face tokenizer (the two are golden-tested to
render identically). `GenericChatFormat` defers rendering to any tokenizer's own template and
parses Hermes/Qwen-style ``<tool_call>{json}</tool_call>`` calls.

Parsers work on the decoded text of the sampled ids (special tokens kept) and never raise:
whatever is malformed is recorded in `ParsedCompletion.errors`. Training never re-tokenises
what they return.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property, lru_cache
from typing import Any, Protocol

from stateset_agents.core.completion import ParsedCompletion, ToolCall
from stateset_agents.core.messages import content_parts, is_image_part, validate_messages

__all__ = [
    "KIMI_CHAT_TEMPLATE",
    "ChatFormat",
    "GenericChatFormat",
    "KimiChatFormat",
    "get_chat_format",
    "load_json",
    "message_reasoning",
    "parse_completion",
]

# Kimi-K2.5 special tokens.
BOS, EOS, PAD = "[BOS]", "[EOS]", "[PAD]"
IM_SYSTEM, IM_USER, IM_ASSISTANT = "<|im_system|>", "<|im_user|>", "<|im_assistant|>"
IM_MIDDLE, IM_END = "<|im_middle|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_SECTION_BEGIN, TOOL_SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN, TOOL_CALL_ARGS = "<|tool_call_begin|>", "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"
MEDIA_BEGIN, MEDIA_CONTENT = "<|media_begin|>", "<|media_content|>"
MEDIA_PAD, MEDIA_END = "<|media_pad|>", "<|media_end|>"
KIMI_DEFAULT_SYSTEM_PROMPT = "You are Kimi, an AI assistant created by Moonshot AI."
KIMI_IMAGE_PLACEHOLDER = f"{MEDIA_BEGIN}image{MEDIA_CONTENT}{MEDIA_PAD}{MEDIA_END}"

KIMI_CHAT_TEMPLATE = r"""
{%- macro render_content(content) -%}
  {%- if content is string -%}{{ content }}
  {%- elif content is iterable and content is not mapping -%}
    {%- for part in content -%}
      {%- if part['type'] == 'text' -%}{{ part['text'] }}
      {%- elif part['type'] in ['image', 'image_url'] -%}
<|media_begin|>image<|media_content|><|media_pad|><|media_end|>
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- set thinking = thinking if thinking is defined else true -%}
{%- if tools -%}
<|im_system|>tool_declare<|im_middle|>{{ tools | tojson(separators=(',', ':')) }}<|im_end|>
{%- endif -%}
{%- if not messages or messages[0]['role'] != 'system' -%}
<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>
{%- endif -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}
<|im_system|>system<|im_middle|>{{ render_content(message['content']) }}<|im_end|>
  {%- elif message['role'] == 'user' -%}
<|im_user|>user<|im_middle|>{{ render_content(message['content']) }}<|im_end|>
  {%- elif message['role'] == 'assistant' -%}
<|im_assistant|>assistant<|im_middle|><think>
    {%- if loop.index0 > ns.last_user and message['reasoning_content'] is string -%}
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
"""Kimi-K2.5's chat format as a jinja template (``tokenizer.chat_template``); template variables:
``tools``, ``add_generation_prompt`` and ``thinking`` (default true)."""

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
    ) -> str: ...

    def generation_prompt(self, thinking: bool = True) -> str: ...

    def parse(self, completion_text: str, thinking: bool = True) -> ParsedCompletion: ...


def message_reasoning(message: Mapping[str, Any]) -> Any:
    """The message's reasoning under its first non-None name (as transformers aliases it)."""
    return next((message[key] for key in REASONING_KEYS if message.get(key) is not None), None)


class KimiChatFormat:
    """Kimi-K2.5's chat format: rendering (identical to `KIMI_CHAT_TEMPLATE`) and parsing."""

    end_of_turn_token = IM_END
    special_tokens = [
        BOS, EOS, PAD, IM_END, IM_USER, IM_ASSISTANT, IM_SYSTEM, IM_MIDDLE, THINK_OPEN, THINK_CLOSE,
        TOOL_SECTION_BEGIN, TOOL_SECTION_END, TOOL_CALL_BEGIN, TOOL_CALL_ARGS, TOOL_CALL_END,
        MEDIA_BEGIN, MEDIA_CONTENT, MEDIA_PAD, MEDIA_END,
    ]  # fmt: skip
    chat_template = KIMI_CHAT_TEMPLATE

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        thinking: bool = True,
    ) -> str:
        """The prompt text for `messages` (validated first), exactly as the jinja template."""
        messages = validate_messages(messages)
        pieces = []
        if tools:
            declared = json.dumps(tools, ensure_ascii=False, separators=(",", ":"))
            pieces.append(_turn(IM_SYSTEM, "tool_declare", declared))
        if messages[0]["role"] != "system":
            pieces.append(_turn(IM_SYSTEM, "system", KIMI_DEFAULT_SYSTEM_PROMPT))
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        for index, message in enumerate(messages):
            pieces.append(self.render_message(message, current_turn=index > last_user))
        if add_generation_prompt:
            pieces.append(self.generation_prompt(thinking))
        return "".join(pieces)

    def render_message(self, message: Mapping[str, Any], current_turn: bool = True) -> str:
        """One message as a full turn. `current_turn`: an assistant message after the last user
        message, whose reasoning is kept (earlier ones get an empty think block)."""
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


# ------------------------------------------------------------------------------------------------
# Parsing helpers shared by the formats (none of them raises)
# ------------------------------------------------------------------------------------------------


def parse_completion(
    completion_text: str,
    *,
    end_of_turn: str,
    starts_inside_think: bool,
    split_tool_calls: Callable[[str, list[str]], tuple[str, list[ToolCall]]],
    stray_tokens: Sequence[str],
    ignorable_after_end: Sequence[str] = (),
    strip: bool = False,
) -> ParsedCompletion:
    """end of turn -> think block -> tool calls -> stray special tokens, errors collected."""
    text = completion_text if isinstance(completion_text, str) else str(completion_text)
    errors: list[str] = []
    body, terminated = split_at_end_of_turn(text, end_of_turn, ignorable_after_end, errors)
    reasoning, rest, closed = split_think(body, starts_inside_think)
    if not closed:
        errors.append(f"think block was not closed with {THINK_CLOSE} (truncated?)")
    content, tool_calls = split_tool_calls(rest, errors)
    if reasoning is not None:
        reasoning = drop_stray_tokens(reasoning, stray_tokens, "reasoning", errors)
    content = drop_stray_tokens(content, stray_tokens, "content", errors)
    if strip:
        reasoning, content = reasoning and reasoning.strip(), content.strip()
    return ParsedCompletion(
        reasoning, content, tool_calls, thinking_closed=closed, terminated=terminated, errors=errors, raw_text=text
    )


def split_at_end_of_turn(
    text: str, end_token: str, ignorable: Sequence[str], errors: list[str]
) -> tuple[str, bool]:
    """Text before the first `end_token`, and whether it was there. Text after it is dropped
    (noted in `errors` unless it is only whitespace and `ignorable` tokens such as padding)."""
    if not end_token or end_token not in text:
        return text, False
    body, _, after = text.partition(end_token)
    leftover = after
    for token in ignorable:
        leftover = leftover.replace(token, "")
    if leftover.strip():
        errors.append(f"ignored text after {end_token}: {after[:80]!r}")
    return body, True


def split_think(text: str, starts_inside: bool) -> tuple[str | None, str, bool]:
    """``(reasoning, rest, closed)``. When the prompt opened the think block (`starts_inside`) the
    reasoning runs to ``</think>``; otherwise an optional leading ``<think>...</think>`` is read.
    An unclosed block makes everything reasoning."""
    if not starts_inside:
        stripped = text.lstrip()
        if not stripped.startswith(THINK_OPEN):
            return None, text, True
        text = stripped[len(THINK_OPEN) :]
    reasoning, closed, rest = text.partition(THINK_CLOSE)
    if not closed:
        return text, "", False
    return reasoning, rest, True


def split_sections(text: str, begin: str, end: str, errors: list[str]) -> tuple[str, list[str]]:
    """Text outside ``begin...end`` sections, and the sections' bodies (an unclosed section runs
    to the end of the text, noted in `errors`)."""
    outside, sections, rest = [], [], text
    while begin in rest:
        before, _, rest = rest.partition(begin)
        outside.append(before)
        section, closed, rest = rest.partition(end)
        if not closed:
            errors.append(f"{begin} was not closed with {end}")
        sections.append(section)
    if sections and rest.strip():
        errors.append(f"text after the tool calls: {rest[:80]!r}")
    outside.append(rest)
    return "".join(outside), sections


def drop_stray_tokens(text: str, tokens: Sequence[str], where: str, errors: list[str]) -> str:
    """Remove special tokens from `text`, noting which ones were found."""
    if not tokens:
        return text
    pattern, found = token_pattern(tuple(tokens)), set()
    while matches := pattern.findall(text):  # repeat: removing one token can join another
        found.update(matches)
        text = pattern.sub("", text)
    if found:
        errors.append(f"removed stray special tokens from the {where}: {', '.join(sorted(found))}")
    return text


@lru_cache(maxsize=16)
def token_pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    """Matches any of `tokens`, longest first (as tokenizers match added tokens)."""
    return re.compile("|".join(map(re.escape, sorted(set(tokens), key=len, reverse=True))))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows; use a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range; use a finite number")
    return value


# Python's json accepts NaN and Infinity (and 1e999 overflows to inf); a NaN amount slips past
# every ``amount > cap`` policy check, so tool-call JSON is read with finite numbers only.
FINITE_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def load_json(raw: str) -> Any:
    """`json.loads` that raises ValueError on NaN, Infinity and numbers that overflow to inf."""
    return FINITE_JSON.decode(raw)


def decode_arguments(raw: str, what: str = "arguments") -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)`` when `raw` is a JSON object with finite numbers, else ``(None, why)``."""
    try:
        value = load_json(raw)
    except (ValueError, RecursionError) as exc:
        return None, f"{what} are not valid JSON ({exc}): {raw[:80]!r}"
    if not isinstance(value, dict):
        return None, f"{what} must be a JSON object, got {type(value).__name__}: {raw[:80]!r}"
    return value, None


# ------------------------------------------------------------------------------------------------
# Generic format: the tokenizer's own template, Hermes/Qwen-style tool calls
# ------------------------------------------------------------------------------------------------

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


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
    ) -> str:
        """The tokenizer's ``apply_chat_template(..., tokenize=False)``; `thinking` is passed both
        as ``thinking`` and as ``enable_thinking`` (Qwen3)."""
        return self.tokenizer.apply_chat_template(
            validate_messages(messages),
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            thinking=thinking,
            enable_thinking=thinking,
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
    """``{"name": ..., "arguments": {...} | "json"}`` -> ToolCall with id ``call_IDX``."""
    call, error = decode_arguments(body, what="tool call contents")
    name, arguments, raw = "", None, body.strip()
    if call is not None:
        name = call.get("name") if isinstance(call.get("name"), str) else ""
        value = call.get("arguments", call.get("parameters", {}))
        raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        arguments, error = decode_arguments(raw)
        if not name:
            error = error or 'missing "name"'
    if error:
        error = f"tool call {index} ({name or '?'}): {error}"
        errors.append(error)
    return ToolCall(id=f"call_{index}", name=name, arguments=arguments, raw_arguments=raw, error=error)


def get_chat_format(tokenizer_or_name: Any) -> KimiChatFormat | GenericChatFormat:
    """`KimiChatFormat` for Kimi tokenizers (``<|im_middle|>`` in the vocabulary, or a name that
    mentions kimi); otherwise a `GenericChatFormat` over the tokenizer's own template."""
    if isinstance(tokenizer_or_name, str):
        if "kimi" in tokenizer_or_name.lower():
            return KimiChatFormat()
        raise ValueError(
            f"cannot pick a chat format from the name {tokenizer_or_name!r} alone: "
            "pass the loaded tokenizer so that its own chat template is used"
        )
    name = str(getattr(tokenizer_or_name, "name_or_path", "") or "")
    if _has_token(tokenizer_or_name, IM_MIDDLE) or "kimi" in name.lower():
        return KimiChatFormat()
    return GenericChatFormat(tokenizer_or_name)


def _has_token(tokenizer: Any, token: str) -> bool:
    try:
        return token in tokenizer.get_vocab()
    except Exception:  # noqa: BLE001 - remote-code tokenizers vary; treat as "not there"
        return False
