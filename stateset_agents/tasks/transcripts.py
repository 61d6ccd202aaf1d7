"""Conversations -> OpenAI-style transcript records, the input of `stateset-agents sft`.

A transcript record is one JSON object per line of a JSONL file:

    {"messages": [{"role": "system", "content": ...}, {"role": "user", ...},
                  {"role": "assistant", "content": ..., "reasoning_content": ...,
                   "tool_calls": [{"id": ..., "type": "function",
                                   "function": {"name": ..., "arguments": "<JSON string>"}}]},
                  {"role": "tool", "tool_call_id": ..., "name": ..., "content": ...}, ...],
     "tools": [OpenAI tool schemas],
     "metadata": {...}}          # optional; ignored by training

`dialogue_to_openai_messages` turns what this package produces (a `generate_reference_dialogues`
item, a `Trajectory`, or any mapping with `messages`) into such a record; `write_transcripts`
writes records as JSONL. Images in messages become ``image_url`` parts with ``data:`` URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from stateset_agents.core.messages import image_to_data_url, validate_messages

__all__ = ["dialogue_to_openai_messages", "write_transcripts", "METADATA_KEYS"]

# dialogue fields copied into "metadata" when present (as `generate_reference_dialogues` labels them)
METADATA_KEYS = ("task", "scenario_id", "quality", "agent", "reward", "end_reason")


def dialogue_to_openai_messages(dialogue: Any, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A JSON-serialisable transcript record for `dialogue`.

    `dialogue`: a mapping with ``messages`` (and optionally ``tools`` and the `METADATA_KEYS`), or
    an object with a ``messages`` attribute (a `Trajectory`). `tools` (OpenAI schemas) override the
    dialogue's own. Only OpenAI fields are kept; tool-call arguments become JSON strings.
    """
    source = dialogue if isinstance(dialogue, Mapping) else {"messages": getattr(dialogue, "messages", None)}
    if source.get("messages") is None:
        raise ValueError(f"expected a dialogue with 'messages', got {type(dialogue).__name__}")
    messages = [_openai_message(message) for message in validate_messages(source["messages"])]
    record: dict[str, Any] = {"messages": messages}
    schemas = tools if tools is not None else source.get("tools")
    if schemas:
        record["tools"] = json.loads(json.dumps(list(schemas)))
    metadata = {key: source[key] for key in METADATA_KEYS if source.get(key) is not None}
    if metadata:
        record["metadata"] = metadata
    return record


def write_transcripts(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write transcript records (e.g. from `dialogue_to_openai_messages`) as JSONL, one per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _openai_message(message: Mapping[str, Any]) -> dict[str, Any]:
    role = message["role"]
    out: dict[str, Any] = {"role": role, "content": _content(message.get("content"))}
    if role == "assistant":
        if isinstance(message.get("reasoning_content"), str):
            out["reasoning_content"] = message["reasoning_content"]
        if message.get("tool_calls"):
            out["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
    if role == "tool":
        out["tool_call_id"] = message["tool_call_id"]
        if message.get("name"):
            out["name"] = message["name"]
    return out


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call["function"]
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    entry: dict[str, Any] = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    return {"id": call["id"], **entry} if call.get("id") else entry


def _content(content: Any) -> Any:
    """Strings as they are; parts with PIL images or paths turned into ``image_url`` data URLs."""
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if part.get("type") == "image":
            image = part["image"]
            url = image_to_data_url(image) if isinstance(image, Image.Image) else str(image)
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            parts.append(json.loads(json.dumps(part)))
    return parts
