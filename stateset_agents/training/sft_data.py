"""Transcript files -> validated conversations -> per-turn token examples for supervised fine-tuning.

Input: JSONL, one conversation per line, OpenAI-style (`tasks.transcripts` writes it):
``{"messages": [...], "tools": [optional OpenAI tool schemas], "metadata": {optional, ignored}}``.
`read_transcripts` checks every line and reports problems by line and field, e.g.
``transcripts.jsonl line 12: messages[3].tool_calls[0].function.arguments: not valid JSON``.

Examples are built the way the sampler sees a turn (as in `training.warm_start`): one example per
assistant message; prompt = the conversation before it rendered by `PromptEncoder` up to the
generation prompt (earlier turns as the chat format shows history); target = exactly the text the
sampler would generate for that turn, ending in the end-of-turn token. Only target tokens get loss.

- Kimi-K2.5 (`KimiChatFormat.render_completion`): ``reasoning</think>answer[tool calls]<|im_end|>``
  after a prompt ending in ``<think>`` (``answer...<|im_end|>`` after ``<think></think>`` without
  thinking). Tool-call ids are rewritten to Kimi's ``functions.NAME:IDX`` (IDX counts the
  conversation's tool calls from 0), the ids the model writes and Kimi's parser reads; the tool
  results are relinked to the new ids.
- Any other model (`GenericChatFormat`, the tokenizer's own template): the target is what the
  template adds when the turn is appended, cut after the end-of-turn token; a template that
  rewrites the earlier conversation, or drops the turn's reasoning, is an error, not a guess.

Every tool result gets the name of the call it answers when it has none (our environments name
them, so prompts look like the ones RL rollouts show). Simplification: text only; image parts are
refused with their line and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateset_agents.core.formats import KimiChatFormat, load_json
from stateset_agents.core.formats.parsing import THINK_CLOSE
from stateset_agents.core.messages import ROLES
from stateset_agents.rollout.encoding import PromptEncoder, mark_text

MAX_REPORTED_PROBLEMS = 20


class TranscriptError(ValueError):
    """A transcript file cannot be used; `problems` are ``FILE line N: FIELD: what is wrong`` lines."""

    def __init__(self, problems: list[str], total: int | None = None):
        self.problems = problems
        more = (total or len(problems)) - len(problems)
        super().__init__("\n".join(problems + ([f"... and {more} more problems"] if more > 0 else [])))


@dataclass
class Transcript:
    """One validated conversation and where it came from (`line`: 1-based line of the file)."""

    line: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class TurnExample:
    """One assistant turn as a training row: `input_ids` [P + C], `completion_mask` [P + C] (1 on the
    C target tokens), and the transcript line and assistant-turn number (0 = first) it came from."""

    input_ids: list[int]
    completion_mask: list[int]
    line: int
    turn: int


# ----------------------------------------------------------------------------- reading and checking


def read_transcripts(path: str | Path) -> list[Transcript]:
    """Every conversation of a JSONL file (blank lines skipped). Raises `TranscriptError` listing the
    first `MAX_REPORTED_PROBLEMS` problems, each with its line and field."""
    path = Path(path)
    if not path.is_file():
        raise TranscriptError([f"{path}: no such file (expected a JSONL file of transcripts)"])
    transcripts, problems = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            found = _line_problems(line)
            if isinstance(found, list):
                problems.extend(f"{path} line {number}: {problem}" for problem in found)
            else:
                transcripts.append(Transcript(number, found["messages"], found.get("tools") or None,
                                              found.get("metadata") if isinstance(found.get("metadata"), dict) else None))
    if problems:
        raise TranscriptError(problems[:MAX_REPORTED_PROBLEMS], len(problems))
    if not transcripts:
        raise TranscriptError([f"{path}: no transcripts (the file is empty)"])
    return transcripts


def _line_problems(line: str) -> dict[str, Any] | list[str]:
    """The decoded record, or the list of its problems."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return [f"not valid JSON ({error.msg} at column {error.colno})"]
    problems = record_problems(record)
    return problems or record


def record_problems(record: Any) -> list[str]:
    """Problems of one transcript record, each ``FIELD: what is wrong`` (empty when it is usable)."""
    if not isinstance(record, Mapping):
        return [f"expected a JSON object with 'messages', got {type(record).__name__}"]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["messages: missing or empty (a list of {'role', 'content'} objects)"]
    problems = _tools_problems(record.get("tools"))
    call_ids: set[str] = set()
    for index, message in enumerate(messages):
        problems += _message_problems(f"messages[{index}]", message, call_ids)
    if not problems and not any(message.get("role") == "assistant" for message in messages):
        problems.append("messages: no assistant message (nothing to learn from)")
    return problems


def _tools_problems(tools: Any) -> list[str]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        return [f"tools: must be a list of OpenAI tool schemas, got {type(tools).__name__}"]
    problems = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not _nonempty(function.get("name")):
            problems.append(f'tools[{index}]: expected {{"type": "function", "function": {{"name": ..., '
                            f'"parameters": {{...}}}}}}')
        elif function.get("parameters") is not None and not isinstance(function["parameters"], Mapping):
            problems.append(f"tools[{index}].function.parameters: must be a JSON schema object")
    return problems


def _message_problems(where: str, message: Any, call_ids: set[str]) -> list[str]:
    if not isinstance(message, Mapping):
        return [f"{where}: expected an object with 'role' and 'content', got {type(message).__name__}"]
    role = message.get("role")
    if role not in ROLES:
        return [f"{where}.role: must be one of {', '.join(ROLES)}, got {role!r}"]
    problems = _content_problems(where, message)
    if message.get("reasoning_content") is not None and (role != "assistant"
                                                         or not isinstance(message["reasoning_content"], str)):
        problems.append(f"{where}.reasoning_content: must be a string, on assistant messages only")
    if message.get("tool_calls") is not None:
        if role != "assistant":
            problems.append(f"{where}.tool_calls: only assistant messages call tools")
        else:
            problems += _tool_calls_problems(where, message["tool_calls"], call_ids)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not _nonempty(call_id):
            problems.append(f"{where}.tool_call_id: missing (the id of the call this result answers)")
        elif call_id not in call_ids:
            problems.append(f"{where}.tool_call_id: {call_id!r} answers no earlier tool call")
        if message.get("name") is not None and not isinstance(message["name"], str):
            problems.append(f"{where}.name: must be a string")
    return problems


def _content_problems(where: str, message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            return []
        return [f"{where}.content: missing (a string, or a list of text parts)"]
    if isinstance(content, str):
        return []
    if not isinstance(content, list):
        return [f"{where}.content: must be a string or a list of parts, got {type(content).__name__}"]
    problems = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("image_url", "image"):
            problems.append(f"{where}.content[{index}]: image parts are not supported by sft (text-only "
                            f"transcripts); drop the image or describe it in text")
        elif kind != "text" or not isinstance(part.get("text"), str):
            problems.append(f'{where}.content[{index}]: expected {{"type": "text", "text": "..."}}')
    return problems


def _tool_calls_problems(where: str, calls: Any, call_ids: set[str]) -> list[str]:
    if not isinstance(calls, list):
        return [f"{where}.tool_calls: must be a list, got {type(calls).__name__}"]
    problems = []
    for index, call in enumerate(calls):
        at = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            problems.append(f'{at}: expected {{"id": ..., "type": "function", "function": {{"name", "arguments"}}}}')
            continue
        if call.get("type", "function") != "function":
            problems.append(f"{at}.type: must be 'function', got {call.get('type')!r}")
        if call.get("id") is not None and not _nonempty(call["id"]):
            problems.append(f"{at}.id: must be a non-empty string")
        elif call.get("id") is not None:
            call_ids.add(call["id"])
        if not _nonempty(function.get("name")):
            problems.append(f"{at}.function.name: must be a non-empty string")
        problems += _arguments_problems(f"{at}.function.arguments", function.get("arguments"))
    return problems


def _arguments_problems(where: str, arguments: Any) -> list[str]:
    if isinstance(arguments, Mapping):
        return []
    if not isinstance(arguments, str):
        return [f"{where}: must be a JSON string (or an object), got {type(arguments).__name__}"]
    try:
        decoded = load_json(arguments)
    except ValueError:
        return [f"{where}: not valid JSON"]
    return [] if isinstance(decoded, dict) else [f"{where}: must encode a JSON object, got {type(decoded).__name__}"]


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ----------------------------------------------------------------------------- conversations -> examples


def prepare_messages(messages: list[dict[str, Any]], kimi: bool) -> list[dict[str, Any]]:
    """Copies of `messages` with tool results named after their call and, for Kimi, call ids
    rewritten to ``functions.NAME:IDX`` (IDX counting the conversation's calls from 0) and the
    results relinked to them (a reused id links to its latest call)."""
    prepared, latest, count = [], {}, 0  # latest: transcript id -> (new id, tool name)
    for message in messages:
        message = dict(message)
        calls = []
        for call in message.get("tool_calls") or []:
            name = call["function"]["name"]
            new_id = f"functions.{name}:{count}" if kimi else call.get("id")
            count += 1
            if call.get("id"):
                latest[call["id"]] = (new_id, name)
            calls.append({**call, "function": dict(call["function"]), **({"id": new_id} if new_id else {})})
        if calls:
            message["tool_calls"] = calls
        if message["role"] == "tool":
            new_id, name = latest[message["tool_call_id"]]
            message["tool_call_id"] = new_id
            message["name"] = message.get("name") or name
        prepared.append(message)
    return prepared


def completion_text(encoder: PromptEncoder, messages: list[dict[str, Any]], index: int,
                    tools: list[dict[str, Any]] | None, thinking: bool) -> str:
    """What the sampler generates for assistant message `index` (text fields bracketed as in
    `mark_text`, for `PromptEncoder.tokenize_marked`)."""
    chat_format = encoder.chat_format
    if isinstance(chat_format, KimiChatFormat):
        text = chat_format.render_completion(mark_text([messages[index]])[0], current_turn=thinking)
        return text if thinking else text.split(THINK_CLOSE, 1)[1]
    return _generic_completion(chat_format, messages, index, tools, thinking)


class TemplateError(ValueError):
    """The tokenizer's chat template cannot give per-turn targets (the message says why)."""


def _generic_completion(chat_format, messages, index, tools, thinking) -> str:
    marked = mark_text(messages[:index + 1])
    prompt = chat_format.render(marked[:index], tools=tools, add_generation_prompt=True, thinking=thinking)
    full = chat_format.render(marked, tools=tools, add_generation_prompt=False, thinking=thinking)
    if not full.startswith(prompt):
        raise TemplateError("the chat template renders the conversation before an assistant turn differently "
                            "once the turn is appended, so the turn's tokens cannot be cut out exactly")
    added = full[len(prompt):]
    end = chat_format.end_of_turn_token
    if not end or end not in added:
        raise TemplateError(f"the chat template does not close an assistant turn with the end-of-turn token "
                            f"{end!r} (the tokenizer's eos_token), so the model would not learn to stop")
    added = added[:added.rindex(end) + len(end)]
    reasoning = messages[index].get("reasoning_content")
    if thinking and isinstance(reasoning, str) and reasoning.strip() and reasoning.strip() not in added:
        raise TemplateError("the chat template drops the assistant turn's reasoning_content; remove "
                            "reasoning_content from the transcripts or use a template that renders it")
    return added


def transcript_examples(transcript: Transcript, encoder: PromptEncoder, thinking: bool = True) -> list[TurnExample]:
    """One `TurnExample` per assistant message of `transcript`."""
    kimi = isinstance(encoder.chat_format, KimiChatFormat)
    messages = prepare_messages(transcript.messages, kimi)
    examples = []
    turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    for turn, index in enumerate(turns):
        prompt = encoder.encode(messages[:index], tools=transcript.tools, thinking=thinking).input_ids
        completion = encoder.tokenize_marked(completion_text(encoder, messages, index, transcript.tools, thinking))
        examples.append(TurnExample(prompt + completion, [0] * len(prompt) + [1] * len(completion),
                                    transcript.line, turn))
    return examples


def build_examples(transcripts: list[Transcript], encoder: PromptEncoder, thinking: bool = True,
                   max_length: int | None = None) -> tuple[list[TurnExample], list[TurnExample]]:
    """(kept, too long): every assistant turn of every transcript; turns longer than `max_length`
    tokens (prompt + target) are set apart whole rather than truncated. A template problem is
    re-raised naming the transcript's line."""
    kept, too_long = [], []
    for transcript in transcripts:
        try:
            examples = transcript_examples(transcript, encoder, thinking)
        except TemplateError as error:
            raise TemplateError(f"line {transcript.line}: {error}") from None
        for example in examples:
            (too_long if max_length and len(example.input_ids) > max_length else kept).append(example)
    return kept, too_long
