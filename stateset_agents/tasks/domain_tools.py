"""Tools of a file domain: declarative steps run against the episode state, or a Python function.

A declarative tool runs its steps in order against one scope (the tool's arguments, the domain's
constants, ``world``, the ledgers, ``revealed_facts``), then renders its `result`:

- ``lookup``: find ``world[collection][key]`` (case-insensitive, surrounding spaces ignored); bind
  the record as ``<as>`` and its key as ``<as>_key``; if missing, the call fails with `missing`;
- ``search``: every record of a collection (bound as ``<as>`` / ``<as>_key``) that passes `where`,
  sorted by `sort`, rendered with `show`; binds the list of texts as `into`;
- ``check``: when the condition is false, record a violation of `policy` (`record_violation`) and/or
  fail the call with `error` (a check with a policy and no error lets the call go on);
- ``let``: bind names to values; ``set``: assign record fields (``order.status``); ``append``: add a
  record to a ledger.

Every check is done when the domain loads: names an expression reads must be bound by then, fields
read from a record must be declared by its collection, and errors name the file, line and field.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stateset_agents.envs.tools import Tool, ToolError
from stateset_agents.tasks.base import record_violation
from stateset_agents.tasks.domain_expressions import (
    Expression,
    ExpressionError,
    Template,
    parse_expression,
    parse_template,
)
from stateset_agents.tasks.domain_schema import JSON_TYPES, IDENTIFIER, DomainModel, ToolModel, parse_step
from stateset_agents.tasks.domain_yaml import DomainError, Path_, YamlDocument

__all__ = ["build_tools", "state_scope", "VIOLATED_POLICIES", "ScopeChecker"]

VIOLATED_POLICIES = "violated_policies"
"""State key: names of the policies violated in the episode, one entry per violation (the message
itself goes to ``policy_violations`` through `record_violation`)."""
RESERVED_NAMES = ("world", "revealed_facts")
SCHEMA_KEYWORDS = frozenset({"type", "description", "enum", "items", "default", "minimum", "maximum", "exclusiveMinimum",
                             "exclusiveMaximum", "minLength", "maxLength", "pattern", "format", "examples",
                             "properties", "required", "additionalProperties", "minItems", "maxItems", "title"})


def state_scope(domain: DomainModel, state: Mapping[str, Any]) -> dict[str, Any]:
    """What every tool expression can read: constants, world, ledgers, revealed facts."""
    scope: dict[str, Any] = dict(domain.constants)
    scope.update({"world": state["world"], "revealed_facts": state.get("revealed_facts", {})})
    scope.update({ledger: state[ledger] for ledger in domain.ledgers})
    return scope


@dataclass
class ScopeChecker:
    """Checks, at load time, that an expression only reads bound names and declared fields."""

    domain: DomainModel
    doc: YamlDocument
    bound: dict[str, str | None] = field(default_factory=dict)  # name -> collection of the record it holds

    def expression(self, text: Any, path: Path_) -> Expression:
        try:
            expression = parse_expression(text) if isinstance(text, str) else parse_expression(repr(text))
        except ExpressionError as exc:
            raise self.doc.error(path, str(exc)) from None
        self._names(expression, path)
        return expression

    def template(self, text: Any, path: Path_) -> Template:
        if not isinstance(text, str):  # a YAML number or boolean: that constant (typed)
            if not isinstance(text, (int, float, bool, type(None))):
                raise self.doc.error(path, f"expected text or a number, got {type(text).__name__} (write lists "
                                           f"and records as an expression in a string, e.g. \"{{[a, b]}}\")")
            return Template(repr(text), ((parse_expression(repr(text)), ""),))
        try:
            template = parse_template(text)
        except ExpressionError as exc:
            raise self.doc.error(path, str(exc)) from None
        for expression in template.expressions:
            self._names(expression, path)
        return template

    def bind(self, name: str, collection: str | None, path: Path_) -> None:
        if name in self.bound or name in RESERVED_NAMES:
            raise self.doc.error(path, f"name {name!r} is already taken here (taken: {', '.join(sorted(self.bound))})")
        self.bound[name] = collection

    def _names(self, expression: Expression, path: Path_) -> None:
        unknown = sorted(expression.names - set(self.bound))
        if unknown:
            raise self.doc.error(path, f"unknown name {unknown[0]!r} in {expression.text!r} "
                                       f"(names here: {', '.join(sorted(self.bound))})")
        for name, attr in expression.fields:
            collection = self.bound.get(name)
            fields = self.domain.collections[collection].fields if collection else None
            if fields is not None and attr not in fields:
                raise self.doc.error(path, f"{name} is a record of {collection}, which has no field {attr!r} "
                                           f"(fields: {', '.join(fields)})")


# -- steps --------------------------------------------------------------------------------------

class Step:
    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError


def _find(collection: Mapping[str, Any], key: Any) -> str | None:
    wanted = str(key).strip().casefold()
    return next((name for name in collection if str(name).casefold() == wanted), None)


@dataclass
class Lookup(Step):
    collection: str
    key: Expression
    name: str
    missing: Template

    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        table = state["world"][self.collection]
        found = _find(table, self.key.evaluate(scope))
        if found is None:
            raise ToolError(str(self.missing.render(scope)))
        scope[self.name], scope[f"{self.name}_key"] = table[found], found


@dataclass
class Search(Step):
    collection: str
    name: str
    where: Expression | None
    sort: Expression | None
    show: Template
    into: str

    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        matches = []
        for key, record in state["world"][self.collection].items():
            local = {**scope, self.name: record, f"{self.name}_key": key}
            if self.where is None or self.where.evaluate(local):
                matches.append(local)
        if self.sort is not None:
            matches.sort(key=self.sort.evaluate)
        scope[self.into] = [str(self.show.render(local)) for local in matches]


@dataclass
class Check(Step):
    condition: Expression
    error: Template | None
    policy: str | None
    violation: Template | None

    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        if self.condition.evaluate(scope):
            return
        if self.policy is not None:
            record_violation(state, str(self.violation.render(scope)) if self.violation else self.policy)
            state.setdefault(VIOLATED_POLICIES, []).append(self.policy)
        if self.error is not None:
            raise ToolError(str(self.error.render(scope)))


@dataclass
class Let(Step):
    values: dict[str, Template]

    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        for name, template in self.values.items():
            scope[name] = template.render(scope)


@dataclass
class Assign(Step):
    targets: list[tuple[Expression, Any, Template]]  # (container expression, key: str | Expression, value)

    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        for container, key, value in self.targets:
            target = container.evaluate(scope)
            if not isinstance(target, dict):
                raise ExpressionError(f"{container.text} is not a record; cannot set a field on it")
            target[key.evaluate(scope) if isinstance(key, Expression) else key] = value.render(scope)


@dataclass
class Append(Step):
    ledger: str
    record: dict[str, Template]

    def run(self, scope: dict[str, Any], state: dict[str, Any]) -> None:
        state[self.ledger].append({name: template.render(scope) for name, template in self.record.items()})


# -- building --------------------------------------------------------------------------------------

def build_tools(domain: DomainModel, doc: YamlDocument, directory: Path) -> list[Tool]:
    """Every tool of the domain, checked; `DomainError` names the first problem."""
    tools = []
    for index, model in enumerate(domain.tools):
        path: Path_ = ("tools", index)
        if model.name in {tool.name for tool in tools}:
            raise doc.error((*path, "name"), f"duplicate tool name {model.name!r}")
        if model.claim is not None:
            try:
                re.compile(model.claim)
            except re.error as exc:
                raise doc.error((*path, "claim"), f"not a valid regular expression: {exc}") from None
        if model.python is not None:
            tools.append(_python_tool(model, path, doc, directory))
        else:
            tools.append(_declarative_tool(domain, model, path, doc))
    return tools


def normalise_parameters(parameters: Any, path: Path_, doc: YamlDocument) -> dict[str, Any]:
    """A JSON-schema object of parameters, checked; ``required`` defaults to every property."""
    if not isinstance(parameters, dict):
        raise doc.error(path, "parameters must be a JSON schema object: {type: object, properties: {...}}")
    extra = sorted(set(parameters) - {"type", "properties", "required", "additionalProperties"})
    if extra:
        raise doc.error((*path, extra[0]), f"unknown field {extra[0]!r} (a parameters schema has type, properties, "
                                           f"required)")
    if parameters.get("type", "object") != "object":
        raise doc.error((*path, "type"), f"parameters must have type 'object', got {parameters['type']!r}")
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict):
        raise doc.error((*path, "properties"), "properties must map parameter names to schemas")
    for name, schema in properties.items():
        where = (*path, "properties", name)
        if not re.match(IDENTIFIER, str(name)):
            raise doc.error(where, f"parameter name {name!r} must be an identifier (letters, digits, _)")
        if not isinstance(schema, dict) or ("type" not in schema and "enum" not in schema):
            raise doc.error(where, "each parameter needs a schema with a type (or an enum)")
        unknown = [key for key in schema if key not in SCHEMA_KEYWORDS]
        if unknown:
            raise doc.error(where, f"unknown key {unknown[0]!r} in the schema of parameter {name!r} (keys: type, "
                                   f"description, enum, items, ...; in a {{...}} mapping, quote text with commas)")
        if "type" in schema and schema["type"] not in JSON_TYPES:
            raise doc.error((*where, "type"), f"unknown type {schema['type']!r} (JSON types: {', '.join(JSON_TYPES)})")
        if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
            raise doc.error((*where, "enum"), "enum must be a non-empty list of allowed values")
    required = parameters.get("required", list(properties))
    if not isinstance(required, list) or any(name not in properties for name in required):
        unknown = [name for name in required if name not in properties] if isinstance(required, list) else required
        raise doc.error((*path, "required"), f"required names {unknown!r}, which are not in properties "
                                             f"({', '.join(properties) or 'none'})")
    return {"type": "object", "properties": properties, "required": list(required)}


def _declarative_tool(domain: DomainModel, model: ToolModel, path: Path_, doc: YamlDocument) -> Tool:
    if not model.description:
        raise doc.error((*path, "description"), "a tool needs a description (the model reads it)")
    if model.parameters is None:
        raise doc.error((*path, "parameters"), "a tool with steps needs parameters (a JSON schema object)")
    if model.result is None:
        raise doc.error((*path, "result"), "a tool with steps needs a result (the text the model reads back)")
    parameters = normalise_parameters(model.parameters, (*path, "parameters"), doc)
    checker = ScopeChecker(domain, doc)
    for name in [*domain.constants, *RESERVED_NAMES, *domain.ledgers]:
        checker.bound[name] = None
    for name in parameters["properties"]:
        checker.bind(name, None, (*path, "parameters", "properties", name))
    steps = [_step(domain, step, (*path, "steps", i), doc, checker) for i, step in enumerate(model.steps)]
    cases = _result_cases(model.result, (*path, "result"), doc, checker)
    names = list(parameters["properties"])

    def run(state: dict[str, Any], **arguments: Any) -> str:
        scope = state_scope(domain, state)
        scope.update({name: arguments.get(name) for name in names})
        for step in steps:
            step.run(scope, state)
        for condition, text in cases:
            if condition is None or condition.evaluate(scope):
                return str(text.render(scope))
        raise ToolError("no result case matched")  # unreachable: the last case has no condition

    run.__name__ = model.name
    return Tool(model.name, model.description, parameters, run, takes_state=True, required=parameters["required"])


def _result_cases(result: Any, path: Path_, doc: YamlDocument,
                  checker: ScopeChecker) -> list[tuple[Expression | None, Template]]:
    if isinstance(result, str):
        return [(None, checker.template(result, path))]
    cases = []
    for i, case in enumerate(result):
        where = (*path, i)
        condition = checker.expression(case.when, (*where, "when")) if case.when is not None else None
        cases.append((condition, checker.template(case.text, (*where, "text"))))
    if cases[-1][0] is not None:
        raise doc.error((*path, len(cases) - 1), "the last result case must have no 'when': it is the fallback")
    return cases


def _collection(domain: DomainModel, name: str, path: Path_, doc: YamlDocument) -> str:
    if name not in domain.collections:
        raise doc.error(path, f"unknown collection {name!r} (collections: {', '.join(domain.collections) or 'none'})")
    return name


def _step(domain: DomainModel, raw: Any, path: Path_, doc: YamlDocument, checker: ScopeChecker) -> Step:
    step: BaseModel = parse_step(raw, path, doc)
    if "lookup" in raw:
        collection = _collection(domain, step.lookup, (*path, "lookup"), doc)
        key = checker.expression(step.key, (*path, "key"))
        missing = checker.template(step.missing or f"no {step.as_} {{{key.text}}}", (*path, "missing"))
        checker.bind(step.as_, collection, (*path, "as"))
        checker.bind(f"{step.as_}_key", None, (*path, "as"))
        return Lookup(collection, key, step.as_, missing)
    if "search" in raw:
        collection = _collection(domain, step.search, (*path, "search"), doc)
        inner = ScopeChecker(domain, doc, dict(checker.bound))
        inner.bind(step.as_, collection, (*path, "as"))
        inner.bind(f"{step.as_}_key", None, (*path, "as"))
        where = inner.expression(step.where, (*path, "where")) if step.where is not None else None
        sort = inner.expression(step.sort, (*path, "sort")) if step.sort is not None else None
        show = inner.template(step.show, (*path, "show"))
        checker.bind(step.into, None, (*path, "into"))
        return Search(collection, step.as_, where, sort, show, step.into)
    if "check" in raw:
        if step.policy is None and step.error is None:
            raise doc.error(path, "a check needs an error (refuse the call), a policy (record a violation), or both")
        if step.policy is not None and step.policy not in domain.policies:
            raise doc.error((*path, "policy"), f"unknown policy {step.policy!r} "
                                               f"(policies: {', '.join(domain.policies) or 'none'})")
        if step.violation is not None and step.policy is None:
            raise doc.error((*path, "violation"), "a violation message needs the policy it breaks (policy: NAME)")
        condition = checker.expression(step.check, (*path, "check"))
        error = checker.template(step.error, (*path, "error")) if step.error is not None else None
        violation = checker.template(step.violation, (*path, "violation")) if step.violation is not None else None
        return Check(condition, error, step.policy, violation)
    if "let" in raw:
        values = {}
        for name, value in step.let.items():
            values[name] = checker.template(value, (*path, "let", name))
            checker.bind(str(name), None, (*path, "let", name))
        return Let(values)
    if "set" in raw:
        return Assign([_target(str(target), value, (*path, "set", target), doc, checker)
                       for target, value in step.set.items()])
    if step.append not in domain.ledgers:
        raise doc.error((*path, "append"), f"unknown ledger {step.append!r} (ledgers: {', '.join(domain.ledgers) or 'none'})")
    return Append(step.append, {str(name): checker.template(value, (*path, "record", name))
                                for name, value in step.record.items()})


def _target(text: str, value: Any, path: Path_, doc: YamlDocument,
            checker: ScopeChecker) -> tuple[Expression, Any, Template]:
    """``order.status`` / ``world.orders[key]`` -> (container expression, key, value template)."""
    expression = checker.expression(text, path)
    node = expression.tree
    if not isinstance(node, (ast.Attribute, ast.Subscript)):
        raise doc.error(path, f"cannot set {text!r}: name a field of a record, e.g. order.status")
    container = parse_expression(ast.unparse(node.value))
    key: Any = node.attr if isinstance(node, ast.Attribute) else parse_expression(ast.unparse(node.slice))
    return container, key, checker.template(value, path)


def _python_tool(model: ToolModel, path: Path_, doc: YamlDocument, directory: Path) -> Tool:
    if model.steps or model.result is not None:
        raise doc.error((*path, "python"), "a tool is either python: module:function or steps + result, not both")
    function = _import_function(model.python, (*path, "python"), doc, directory)
    if model.parameters is None:
        tool = Tool.from_function(function, name=model.name)
        if model.description:
            tool.description = model.description
        return tool
    parameters = normalise_parameters(model.parameters, (*path, "parameters"), doc)
    first = next(iter(_signature_names(function)), None)
    description = model.description or Tool.from_function(function).description
    return Tool(model.name, description, parameters, function, takes_state=first == "state",
                required=parameters["required"])


def _signature_names(function: Callable[..., Any]) -> list[str]:
    import inspect

    return list(inspect.signature(function).parameters)


def _import_function(spec: str, path: Path_, doc: YamlDocument, directory: Path) -> Callable[..., Any]:
    """``package.module:function``, or ``file.py:function`` (a file next to the domain file)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise doc.error(path, f"{spec!r} must be module:function (e.g. my_tools.py:refund or my_pkg.tools:refund)")
    try:
        if module_name.endswith(".py"):
            file = (directory / module_name).resolve()
            if not file.is_file():
                raise DomainError(f"no file {file}")
            name = f"stateset_domain_{abs(hash(str(file)))}_{file.stem}"
            module_spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported at its line
        raise doc.error(path, f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise doc.error(path, f"{module_name} has no function {attribute!r}")
    return function
