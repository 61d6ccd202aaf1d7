"""Tools: plain typed Python functions exposed to the model with JSON schemas.

A tool is an ordinary function. If its first parameter is named ``state`` it receives the
per-episode state dict (injected by the environment, hidden from the model); every other
parameter becomes a property of the tool's JSON schema. Types map to JSON types
(``str`` -> string, ``int`` -> integer, ``float`` -> number, ``bool`` -> boolean, ``list[X]`` ->
array, ``dict`` -> object, ``Literal[...]`` -> enum); descriptions come from the docstring's first
paragraph and its Google-style ``Args:`` section; parameters without defaults are required.

Tools report a domain problem by raising `ToolError`. `ToolSet.call` never raises: an unknown tool,
arguments that failed to parse, missing / extra / wrongly typed arguments, a `ToolError` or any
other exception inside the tool all come back as an ``"error: ..."`` string the model sees.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from stateset_agents.core.completion import ToolCall
from stateset_agents.core.formats.hermes import parse_generic_tool_calls

__all__ = ["Tool", "ToolError", "ToolOutcome", "ToolSet", "parse_generic_tool_calls", "ERROR_PREFIX",
           "is_finite_number"]

ERROR_PREFIX = "error:"
STATE_PARAM = "state"
_JSON_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
                    "boolean": "a boolean", "array": "an array", "object": "an object"}


class ToolError(Exception):
    """Raised by a tool for a problem the model should read (unknown id, policy limit...)."""


@dataclass
class ToolOutcome:
    """What one tool call produced: `content` is what the model sees; `ok` is False on errors."""

    name: str
    arguments: dict[str, Any] | None
    content: str
    ok: bool


def _type_schema(annotation: Any) -> dict[str, Any]:
    """JSON schema of one Python type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        first = args[0]
        json_type = "boolean" if isinstance(first, bool) else "integer" if isinstance(first, int) else (
            "number" if isinstance(first, float) else "string")
        return {"type": json_type, "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        non_none = [arg for arg in args if arg is not type(None)]
        return _type_schema(non_none[0]) if len(non_none) == 1 else {}
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is list or origin is list:
        return {"type": "array", "items": _type_schema(args[0])} if args else {"type": "array"}
    if annotation is dict or origin is dict:
        return {"type": "object"}
    return {}


def _docstring_parts(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    description_lines: list[str] = []
    for line in lines:
        if not line.strip() or line.strip() == "Args:":
            break
        description_lines.append(line.strip())
    params: dict[str, str] = {}
    if "Args:" in (line.strip() for line in lines):
        start = [line.strip() for line in lines].index("Args:") + 1
        entry_indent: int | None = None
        current: str | None = None
        for line in lines[start:]:
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent == 0:
                break  # next section (Returns:, Raises:, ...)
            entry = re.match(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if entry and (entry_indent is None or indent == entry_indent):
                entry_indent, current = indent, entry.group(1)
                params[current] = entry.group(2).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(description_lines), params


def _check_value(schema: dict[str, Any], value: Any) -> tuple[Any, str | None]:
    """Validate (and lightly normalise) one argument value; returns (value, problem or None)."""
    json_type = schema.get("type")
    if "enum" in schema:
        for option in schema["enum"]:
            if value == option or (isinstance(value, str) and isinstance(option, str)
                                   and value.strip().lower() == option.lower()):
                return option, None
        return value, f"must be one of {', '.join(map(str, schema['enum']))}; got {value!r}"
    ok = True
    if json_type == "string":
        ok = isinstance(value, str)
    elif json_type == "boolean":
        ok = isinstance(value, bool)
    elif json_type == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif json_type == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not is_finite_number(value):  # NaN fails every `amount > cap` check: never let one through
            return value, f"must be a finite number, got {value!r:.40}"
        value = float(value) if ok else value
    elif json_type == "array":
        ok = isinstance(value, list)
        if ok and "items" in schema:
            checked = [_check_value(schema["items"], item) for item in value]
            problems = [problem for _, problem in checked if problem]
            if problems:
                return value, f"has an invalid item: {problems[0]}"
            value = [item for item, _ in checked]
    elif json_type == "object":
        ok = isinstance(value, dict)
    if not ok:
        return value, f"must be {_JSON_TYPE_NAMES[json_type]}, got {_json_type_of(value)}"
    return value, None


def is_finite_number(value: Any) -> bool:
    """An int or float that is not NaN or infinite (and fits in a float); never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                              (list, "array"), (dict, "object")):
        if isinstance(value, python_type):
            return name
    return type(value).__name__


@dataclass
class Tool:
    """A callable exposed to the model, with its JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    takes_state: bool = False
    required: list[str] = field(default_factory=list)

    @classmethod
    def from_function(cls, function: Callable[..., Any], name: str | None = None) -> Tool:
        """Derive the schema from `function`'s signature, type hints and docstring."""
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function)
        description, param_docs = _docstring_parts(function.__doc__)
        params = list(signature.parameters.values())
        takes_state = bool(params) and params[0].name == STATE_PARAM
        properties: dict[str, Any] = {}
        required: list[str] = []
        for param in params[1:] if takes_state else params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {function.__name__}: *args/**kwargs are not supported")
            schema = _type_schema(hints.get(param.name, Any))
            if param.name in param_docs:
                schema["description"] = param_docs[param.name]
            properties[param.name] = schema
            if param.default is inspect.Parameter.empty:
                required.append(param.name)
        parameters = {"type": "object", "properties": properties, "required": required}
        return cls(name or function.__name__, description, parameters, function, takes_state, required)

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function schema."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Check arguments against the schema; returns (normalised arguments, problem or None)."""
        properties = self.parameters["properties"]
        expected = ", ".join(properties) or "none"
        missing = [name for name in self.required if name not in arguments]
        if missing:
            return arguments, f"missing argument {', '.join(repr(m) for m in missing)} for {self.name}; expected: {expected}"
        extra = [name for name in arguments if name not in properties]
        if extra:
            return arguments, f"unexpected argument {', '.join(repr(e) for e in extra)} for {self.name}; expected: {expected}"
        normalised: dict[str, Any] = {}
        for name, value in arguments.items():
            normalised[name], problem = _check_value(properties[name], value)
            if problem:
                return arguments, f"argument '{name}' of {self.name} {problem}"
        return normalised, None


class ToolSet:
    """An ordered set of tools with schemas for the chat template and a never-raising `call`."""

    def __init__(self, tools: Iterable[Callable[..., Any] | Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            tool = item if isinstance(item, Tool) else Tool.from_function(item)
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """``[{"type": "function", "function": {"name", "description", "parameters"}}, ...]``."""
        return [tool.schema() for tool in self]

    def run(self, call: ToolCall, state: dict[str, Any]) -> ToolOutcome:
        """Execute one call against `state`; every failure becomes an ``error: ...`` outcome."""
        tool = self._tools.get(call.name)
        if tool is None:
            return self._error(call, f"unknown tool '{call.name}'; available: {', '.join(self.names)}")
        if call.arguments is None:
            why = f" ({call.error})" if call.error else ""
            return self._error(call, f"could not parse the arguments of {call.name} as a JSON object{why}")
        arguments, problem = tool.validate(call.arguments)
        if problem:
            return self._error(call, problem)
        try:
            result = tool.function(state, **arguments) if tool.takes_state else tool.function(**arguments)
        except ToolError as exc:
            return self._error(call, str(exc), arguments)
        except Exception as exc:  # noqa: BLE001 - a tool bug must not crash the rollout
            return self._error(call, f"tool {call.name} failed: {type(exc).__name__}: {exc}", arguments)
        return ToolOutcome(call.name, arguments, str(result), ok=True)

    def call(self, call: ToolCall, state: dict[str, Any]) -> str:
        """The text the model sees for one call (an ``error: ...`` string on any failure)."""
        return self.run(call, state).content

    @staticmethod
    def _error(call: ToolCall, message: str, arguments: dict[str, Any] | None = None) -> ToolOutcome:
        args = arguments if arguments is not None else call.arguments
        return ToolOutcome(call.name, args, f"{ERROR_PREFIX} {message}", ok=False)
