"""Scenario records: their schema, JSONL I/O, and loading with clear errors.

A scenario is a JSON object (one per line in ``tasks/data/{task}_{split}.jsonl``)::

    id        unique string, e.g. "cs-train-007"
    task      task name (optional; must match when present)
    family    scenario family, e.g. "photo_refund" (free text)
    persona   user persona: "polite", "terse", "impatient"... (phrasing only)
    topic     short noun phrase for the problem ("your broken mug")
    opening   the user's first message (text)
    image     optional {"kind": "intact" | "damaged", "seed": int}: a photo attached to the opening
    facts     hidden facts the user reveals only when asked: {"order_id": "A1234"}
    world     the per-episode store the tools act on (orders, devices, catalog...)
    goal      {"description", "require": [{"tool", "args"}], "forbid": [tool], "say": [[phrase]],
              "ordered": bool (default true: required calls must happen in order)}
              (see `stateset_agents.envs.goals`)
    solution  optional success path for scripted agents: {"opener", "ask_why",
              "calls": [{"tool", "args", "why"}], "reply", "reply_why"}

Extra fields are kept. `load_scenarios` accepts a JSONL path, a `datasets.Dataset` or a list of
dicts with these fields, validates every record (schema, then the task's own checks) and raises
`ScenarioError` naming the line (files) or row (datasets, lists) and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from stateset_agents.tasks.base import Task

__all__ = ["Scenario", "ScenarioError", "load_scenarios", "read_jsonl_lines", "dump_jsonl"]

_JSON_FIELDS = ("facts", "world", "goal", "solution", "image")


class ScenarioError(ValueError):
    """A scenario record is invalid; the message names the line/row and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallSpec(_Model):
    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    why: str | None = None


class Goal(_Model):
    description: str = ""
    require: list[CallSpec] = Field(default_factory=list)
    forbid: list[str] = Field(default_factory=list)
    say: list[list[str]] = Field(default_factory=list)
    ordered: bool = True


class Solution(_Model):
    opener: str = ""
    ask_why: str = ""
    calls: list[CallSpec] = Field(default_factory=list)
    reply: str = Field(min_length=1)
    reply_why: str = ""


class ImageSpec(_Model):
    kind: Literal["intact", "damaged"]
    seed: int


class Scenario(BaseModel):
    """Schema of one scenario (extra fields allowed for task-specific needs)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    task: str | None = None
    family: str = ""
    persona: str = "polite"
    topic: str = "your issue"
    opening: str = Field(min_length=1)
    image: ImageSpec | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    world: dict[str, Any] = Field(default_factory=dict)
    goal: Goal
    solution: Solution | None = None

    @field_validator("facts")
    @classmethod
    def _scalar_facts(cls, facts: dict[str, Any]) -> dict[str, Any]:
        for key, value in facts.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"value of {key!r} must be a string or a number, got {type(value).__name__}")
        return facts


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "record"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _strip_nones(value: Any) -> Any:
    """Drop None entries from dicts (Arrow fills absent struct keys with None)."""
    if isinstance(value, dict):
        return {key: _strip_nones(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_strip_nones(item) for item in value]
    return value


def _from_table_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `datasets` row back to a scenario dict: JSON-string columns decoded, Arrow Nones dropped."""
    record = dict(row)
    for name in _JSON_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = json.loads(record[name])
    return {key: _strip_nones(value) for key, value in record.items() if value is not None}


def read_jsonl_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; `ScenarioError` on invalid JSON."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{path}, line {number}: invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise ScenarioError(f"{path}, line {number}: expected a JSON object, got {type(obj).__name__}")
        records.append((number, obj))
    return records


def dump_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    """Canonical JSONL text (sorted keys, one record per line): byte-stable across runs."""
    return "".join(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n" for record in records)


def _records(source: Any) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """(location label, record) pairs from a path, a `datasets.Dataset` or a list of dicts."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ScenarioError(f"scenario file not found: {path}")
        return [(f"{path}, line {n}", obj) for n, obj in read_jsonl_lines(path)], str(path)
    if hasattr(source, "column_names") and hasattr(source, "__getitem__"):
        return [(f"row {i}", _from_table_row(source[i])) for i in range(len(source))], "dataset"
    if isinstance(source, Iterable) and not isinstance(source, Mapping):
        pairs = []
        for i, row in enumerate(source):
            if not isinstance(row, Mapping):
                raise ScenarioError(f"row {i}: expected a dict, got {type(row).__name__}")
            pairs.append((f"row {i}", dict(row)))
        return pairs, "list"
    raise ScenarioError(f"cannot load scenarios from {type(source).__name__}; "
                        "give a JSONL path, a datasets.Dataset or a list of dicts")


def load_scenarios(source: Any, task: Task | str) -> list[dict[str, Any]]:
    """Validated scenario dicts for `task` (a Task or a registered task name)."""
    if isinstance(task, str):
        from stateset_agents.tasks.registry import get_task

        task = get_task(task)
    pairs, what = _records(source)
    if not pairs:
        raise ScenarioError(f"no scenarios in {what}")
    scenarios: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, record in pairs:
        label = f"{where} (id {record.get('id')!r})" if record.get("id") else where
        try:
            scenario = Scenario.model_validate(record).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise ScenarioError(f"{label}: {_describe(exc)}") from None
        if scenario.get("task") not in (None, task.name):
            raise ScenarioError(f"{label}: task is {scenario['task']!r}, expected {task.name!r}")
        if scenario["id"] in seen:
            raise ScenarioError(f"{label}: duplicate id (first at {seen[scenario['id']]})")
        seen[scenario["id"]] = where
        try:
            task.validate_scenario(scenario)
        except ValueError as exc:
            raise ScenarioError(f"{label}: {exc}") from None
        scenarios.append(scenario)
    return scenarios
