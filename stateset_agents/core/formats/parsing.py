"""Parsing helpers shared by the chat formats: end of turn, think block, sections, stray special
tokens, and JSON with finite numbers only. None of them raises on model output."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from stateset_agents.core.completion import ParsedCompletion, ToolCall

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


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
