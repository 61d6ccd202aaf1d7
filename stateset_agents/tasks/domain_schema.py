"""The schema of ``domain.yaml`` (pydantic models) and its validation errors with file and line.

Field by field documentation: ``docs/domains.md``. `parse_domain` checks the structure (types,
required and unknown fields); the meaning (names in expressions, collections, policies and tools
that exist) is checked where each part is built (`domain_tools`, `file_domain`), with the same
``file line N: field: problem`` errors.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stateset_agents.tasks.domain_yaml import DomainError, Path_, YamlDocument

__all__ = ["DomainModel", "ToolModel", "CollectionModel", "FieldSpec", "STEP_MODELS", "parse_domain", "parse_step",
           "JSON_TYPES"]

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FactModel(_Strict):
    """How the simulated user is asked for a hidden fact and how it answers (`envs.facts.FactSpec`)."""

    question: str = Field(min_length=1)
    ask_patterns: list[str] = Field(min_length=1)
    reveal: list[str] = Field(min_length=1)
    label: str = ""

    @field_validator("ask_patterns")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return patterns

    @field_validator("reveal")
    @classmethod
    def _has_value(cls, templates: list[str]) -> list[str]:
        for template in templates:
            if "{value}" not in template:
                raise ValueError(f"{template!r} must contain {{value}} (where the fact's value goes)")
        return templates


class FieldSpec(_Strict):
    """One field of a collection's records: a JSON type or a list of allowed values."""

    type: Literal["string", "number", "integer", "boolean", "array", "object", "any"] = "any"
    enum: list[str | int | float | bool] | None = None
    optional: bool = False


class CollectionModel(_Strict):
    """A keyed table in a scenario's world (``world[<name>]``: key -> record)."""

    fields: dict[str, FieldSpec] | None = None
    key_fact: str | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, fields: Any) -> Any:
        """``total: number`` is short for ``total: {type: number}``."""
        if isinstance(fields, dict):
            return {name: {"type": spec} if isinstance(spec, str) else spec for name, spec in fields.items()}
        return fields


class PolicyModel(_Strict):
    description: str = Field(min_length=1)


class ResultCase(_Strict):
    when: str | None = None
    text: str


class ToolModel(_Strict):
    """A tool: declarative `steps` and a `result`, or a Python function (`python: module:function`)."""

    name: str = Field(pattern=IDENTIFIER)
    description: str = ""
    parameters: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list)
    result: str | list[ResultCase] | None = None
    python: str | None = None
    claim: str | None = None


class ViolationCall(_Strict):
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class ViolationCase(_Strict):
    when: str | None = None
    call: ViolationCall
    claim: str


class ScenarioFiles(_Strict):
    train: str = "train.jsonl"
    eval: str | None = "eval.jsonl"


class DomainModel(_Strict):
    name: str = Field(pattern=IDENTIFIER)
    description: str = ""
    system_prompt: str = Field(min_length=1)
    facts: dict[str, FactModel] = Field(default_factory=dict)
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    collections: dict[str, CollectionModel] = Field(default_factory=dict)
    ledgers: list[str] = Field(default_factory=list)
    policies: dict[str, PolicyModel] = Field(default_factory=dict)
    tools: list[ToolModel] = Field(min_length=1)
    violation: list[ViolationCase] = Field(default_factory=list)
    reward: dict[str, float] | None = None
    scenarios: ScenarioFiles = Field(default_factory=ScenarioFiles)


# -- steps (validated one by one: each is a mapping with exactly one kind key) ------------------

class LookupStep(_Strict):
    lookup: str
    key: str
    as_: str = Field(alias="as", pattern=IDENTIFIER)
    missing: str | None = None


class SearchStep(_Strict):
    search: str
    as_: str = Field(alias="as", pattern=IDENTIFIER)
    where: str | None = None
    sort: str | None = None
    show: str
    into: str = Field("found", pattern=IDENTIFIER)


class CheckStep(_Strict):
    check: str
    error: str | None = None
    policy: str | None = None
    violation: str | None = None


class LetStep(_Strict):
    let: dict[str, Any] = Field(min_length=1)


class SetStep(_Strict):
    set: dict[str, Any] = Field(min_length=1)


class AppendStep(_Strict):
    append: str
    record: dict[str, Any] = Field(min_length=1)


STEP_MODELS: dict[str, type[_Strict]] = {"lookup": LookupStep, "search": SearchStep, "check": CheckStep,
                                          "let": LetStep, "set": SetStep, "append": AppendStep}

_ALL_FIELDS = sorted({name for model in (FactModel, FieldSpec, CollectionModel, PolicyModel, ResultCase, ToolModel,
                                          ViolationCall, ViolationCase, ScenarioFiles, DomainModel, *STEP_MODELS.values())
                      for name, info in model.model_fields.items() for name in (info.alias or name,)})


def parse_domain(doc: YamlDocument) -> DomainModel:
    """The validated top-level structure of a domain file."""
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping of fields (name, system_prompt, tools...), got {type(doc.data).__name__}")
    return _validate(DomainModel, doc.data, (), doc)


def parse_step(step: Any, path: Path_, doc: YamlDocument) -> BaseModel:
    """One tool step: exactly one of the kinds in `STEP_MODELS`."""
    kinds = [kind for kind in STEP_MODELS if isinstance(step, dict) and kind in step]
    if len(kinds) != 1:
        found = f"{', '.join(kinds)} together" if kinds else (
            f"keys {', '.join(map(str, step))}" if isinstance(step, dict) else type(step).__name__)
        raise doc.error(path, f"a step needs exactly one of {', '.join(STEP_MODELS)}; got {found}")
    return _validate(STEP_MODELS[kinds[0]], step, path, doc)


def _validate(model: type[BaseModel], data: Any, path: Path_, doc: YamlDocument) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # an unknown field first: a misspelt field usually also shows up as a required one missing
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        first = errors[0]
        at = (*path, *_data_path(data, first))
        more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after this one)" if len(errors) > 1 else ""
        raise doc.error(at, _message(first) + more) from None


def _data_path(data: Any, error: dict[str, Any]) -> Path_:
    """The error's location as a path into the data (pydantic adds union member names, dropped here)."""
    path: list[str | int] = []
    current = data
    for part in error["loc"]:
        if isinstance(current, dict) and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and error["type"] in ("missing", "extra_forbidden") and part == error["loc"][-1]:
            path.append(part)
            break
    return tuple(path)


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        name = str(error["loc"][-1])
        close = difflib.get_close_matches(name, _ALL_FIELDS, n=1)
        return f"unknown field {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if error["type"] == "missing":
        return "this field is required"
    return str(error["msg"]).removeprefix("Value error, ")
