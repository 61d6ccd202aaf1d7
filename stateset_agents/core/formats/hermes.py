"""Tool calls written as plain JSON (Hermes / Qwen style), for models without Kimi's tool-call
tokens: the one parser of this syntax, used by `GenericChatFormat` for ``<tool_call>`` blocks and
by `parse_generic_tool_calls` for free text.

Accepted forms (anywhere in the text):

- ``<tool_call>{"name": "lookup_order", "arguments": {"order_id": "A1234"}}</tool_call>``
  (Hermes / Qwen style; when any ``<tool_call>`` tag is present, only tagged blocks count);
- bare JSON objects with a string ``"name"`` and an ``"arguments"`` (or ``"parameters"``) object,
  alone or in a JSON list; ``"arguments"`` may also be a JSON-encoded string;
- OpenAI's ``{"function": {"name": ..., "arguments": ...}}`` shape.

`parse_generic_tool_calls` never raises: a block that is not valid JSON still yields a `ToolCall`
with ``arguments=None`` and an ``error`` (its name recovered when possible), so the environment
can answer it with an error string.
"""

from __future__ import annotations

import json
import re
from typing import Any

from stateset_agents.core.completion import ToolCall
from stateset_agents.core.formats.parsing import FINITE_JSON, load_json

__all__ = ["TOOL_CALL_OPEN", "TOOL_CALL_CLOSE", "parse_generic_tool_calls", "parse_tool_call_block"]

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


def parse_generic_tool_calls(text: str) -> list[ToolCall]:
    """Extract tool calls from `text`; ids are ``call_0``, ``call_1``... in order of appearance."""
    if not isinstance(text, str):
        return []
    try:
        if "<tool_call>" in text:
            raw_calls = [_from_block(block) for block in _TAGGED.findall(text)]
        else:
            raw_calls = [_from_object(obj, json.dumps(obj)) for obj in _bare_objects(text)]
    except Exception:  # noqa: BLE001 - the parser must never raise on model output
        return []
    return [ToolCall(id=f"call_{index}", name=name, arguments=arguments, raw_arguments=raw, error=error)
            for index, (name, arguments, raw, error) in enumerate(call for call in raw_calls if call)]


_Raw = tuple[str, "dict[str, Any] | None", str, "str | None"]


def parse_tool_call_block(block: str, index: int = 0) -> ToolCall:
    """The body of one ``<tool_call>`` block as a ToolCall with id ``call_{index}``; invalid JSON
    gives arguments None and an `error` (the name recovered when possible)."""
    try:
        name, arguments, raw, error = _from_block(block)
    except Exception as exc:  # noqa: BLE001 - the parser must never raise on model output (e.g. deep nesting)
        name, arguments, raw, error = "", None, block.strip(), f"unreadable tool call: {type(exc).__name__}"
    return ToolCall(id=f"call_{index}", name=name, arguments=arguments, raw_arguments=raw, error=error)


def _from_block(block: str) -> _Raw | None:
    """One ``<tool_call>`` body; invalid JSON gives a call with arguments None and an error."""
    body = block.strip()
    try:
        obj = load_json(body)
    except ValueError as exc:  # JSONDecodeError, or a non-finite number
        name = _NAME.search(body)
        return (name.group(1) if name else "", None, body, f"invalid JSON in tool call: {getattr(exc, 'msg', exc)}")
    if not isinstance(obj, dict):
        return ("", None, body, "tool call is not a JSON object")
    return _from_object(obj, body)


def _from_object(obj: dict[str, Any], raw: str) -> _Raw | None:
    """Normalise one decoded object; None when it does not look like a tool call."""
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str):
        return ("", None, raw, "tool call has no string 'name'")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    raw_arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    if isinstance(arguments, str):
        try:
            arguments = load_json(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return (name, None, raw_arguments, f"arguments are not valid JSON: {getattr(exc, 'msg', exc)}")
    if not isinstance(arguments, dict):
        return (name, None, raw_arguments, "arguments are not a JSON object")
    return (name, arguments, raw_arguments, None)


def _bare_objects(text: str) -> list[dict[str, Any]]:
    """Top-level JSON objects (or lists of objects) in free text that carry a ``name``."""
    decoder = FINITE_JSON
    found: list[dict[str, Any]] = []
    position = 0
    while True:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            return found
        start = min(starts)
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:  # not JSON, or a NaN/Infinity: not a call we will run
            position = start + 1
            continue
        items = obj if isinstance(obj, list) else [obj]
        found.extend(item for item in items if isinstance(item, dict) and _looks_like_call(item))
        position = end


def _looks_like_call(obj: dict[str, Any]) -> bool:
    inner = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    return isinstance(inner.get("name"), str) and ("arguments" in inner or "parameters" in inner)
