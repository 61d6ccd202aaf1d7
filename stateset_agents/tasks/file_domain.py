"""File domains: a support domain declared in files, loaded as a `Task`.

    examples/domains/telecom_billing/
        domain.yaml     name, system prompt, hidden facts, world collections, ledgers, policies,
                        tools (declarative steps or python: module:function), violation plan, reward mix
        train.jsonl     scenarios (the schema of `tasks.scenario_records`), one per line
        eval.jsonl      held-out scenarios (optional)

``get_task("examples/domains/telecom_billing")`` (or ``--task`` / ``task:`` with that path, or the
path of a ``.yaml`` file) returns a `FileDomainTask`: the same environments, rule-based user,
scripted agents and reward components as the built-in tasks. Everything is validated when the
domain loads, and every error names the file, the line and the field. The format, field by
field: ``docs/domains.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stateset_agents.core.trajectory import Trajectory
from stateset_agents.envs.facts import COMMON_FACTS, FactSpec
from stateset_agents.envs.tools import Tool
from stateset_agents.rewards.components import COMPONENTS, DEFAULT_CLAIMS, DEFAULT_WEIGHTS, PolicyCompliance
from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
from stateset_agents.tasks.base import Task, UniqueIds
from stateset_agents.tasks.domain_expressions import ExpressionError, Expression, Template
from stateset_agents.tasks.domain_schema import CollectionModel, DomainModel, FieldSpec, parse_domain
from stateset_agents.tasks.domain_tools import VIOLATED_POLICIES, ScopeChecker, build_tools
from stateset_agents.tasks.domain_yaml import DomainError, YamlDocument, load_yaml_document
from stateset_agents.tasks.scenario_records import ScenarioError, load_scenarios

__all__ = ["FileDomainTask", "PolicyKept", "DomainError", "load_domain", "is_domain_path", "domain_file", "task_slug",
           "DOMAIN_FILE", "SCENARIO_NAMES", "domain_notes", "DOMAINS_RECORD"]

DOMAIN_FILE = "domain.yaml"
SCENARIO_NAMES = ("id", "family", "persona", "topic", "opening", "facts", "world", "goal", "solution", "scenario")
"""Names a violation plan can read: the scenario's fields (``solution`` is the success path, derived
when the record has none) and ``scenario``, the whole record (for your own extra fields)."""
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


def is_domain_path(name: str) -> bool:
    """`name` means a domain on disk: it contains a path separator, ends in .yaml/.yml, or is a directory."""
    return "/" in name or os.sep in name or name.endswith((".yaml", ".yml")) or Path(name).is_dir()


def task_slug(task: str) -> str:
    """A run-directory name for a task or comma-separated sequence: names as they are, domain paths
    by their directory (or file) name: ``examples/domains/telecom_billing,sales`` -> ``telecom_billing_sales``."""
    def one(name: str) -> str:
        if not is_domain_path(name):
            return name
        path = Path(name)
        return path.parent.name if path.name in (DOMAIN_FILE, "domain.yml") else path.stem
    return "_".join(one(name.strip()) for name in task.split(","))


def domain_file(source: str | Path) -> Path:
    """The domain's YAML file: `source` itself, or ``domain.yaml`` inside the directory `source`."""
    path = Path(source)
    if path.is_dir():
        if not (path / DOMAIN_FILE).is_file():
            raise DomainError(f"{path} is a directory without {DOMAIN_FILE}; a file domain is a directory with "
                              f"{DOMAIN_FILE} and its scenario files (see docs/domains.md)")
        return path / DOMAIN_FILE
    if not path.is_file():
        raise DomainError(f"no domain at {source}: expected a directory with {DOMAIN_FILE} or a .yaml file "
                          f"(paths are relative to the working directory, {Path.cwd()})")
    return path


def load_domain(source: str | Path) -> FileDomainTask:
    """The validated domain at `source` (a directory or its YAML file); `DomainError` names any problem."""
    return FileDomainTask(source)


DOMAINS_RECORD = "domains.json"


def domain_notes(tasks: list[Any], output_dir: str | Path, *, resume: bool, write: bool = True) -> list[str]:
    """What a run logs about its file domains: source and content digest of each, and on resume
    which ones changed since the run recorded them (the run goes on with the new content: a
    fixed typo in a scenario should not strand a run). Records ``{source: sha256}`` in
    ``output_dir/domains.json`` when `write`."""
    domains = {task.source: task.digest for task in tasks if isinstance(task, FileDomainTask)}
    if not domains:
        return []
    record = Path(output_dir) / DOMAINS_RECORD
    saved = json.loads(record.read_text(encoding="utf-8")) if resume and record.is_file() else {}
    notes = [f"task {task.describe_source()}" for task in tasks if isinstance(task, FileDomainTask)]
    notes += [f"resume: domain {source} changed since the run recorded it (sha256 {saved[source][:12]} -> "
              f"{digest[:12]}); training goes on with the files as they are now"
              for source, digest in domains.items() if source in saved and saved[source] != digest]
    if write:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({**saved, **domains}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return notes


class PolicyKept:
    """Reward component ``policy.<name>``: 1 when the episode never broke that policy, else 0."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.name = f"policy.{policy}"

    def __call__(self, trajectory: Trajectory) -> float:
        return 0.0 if self.policy in trajectory.state.get(VIOLATED_POLICIES, []) else 1.0


class FileDomainTask(Task):
    """A `Task` whose prompt, tools, policies, scenarios and reward mix come from files."""

    def __init__(self, source: str | Path) -> None:
        self.source = str(source)
        path = domain_file(source)
        self.directory = path.parent
        self.doc: YamlDocument = load_yaml_document(path, str(path))
        self.model: DomainModel = parse_domain(self.doc)
        model = self.model
        self.name = model.name  # type: ignore[misc]  # instance values over the Task ClassVars
        self.id_prefix = model.name  # type: ignore[misc]
        self.system_prompt = model.system_prompt  # type: ignore[misc]
        self.ledgers = tuple(self._checked_ledgers())  # type: ignore[misc]
        self.fact_specs = {**COMMON_FACTS, **{key: FactSpec(key, fact.question, tuple(fact.ask_patterns),  # type: ignore[misc]
                                                            tuple(fact.reveal), fact.label)
                                              for key, fact in model.facts.items()}}
        self._checked_constants()
        self._tool_list: list[Tool] = build_tools(model, self.doc, self.directory)
        self.claims = {tool.name: tool.claim for tool in model.tools if tool.claim is not None}
        self.claims.update({name: pattern for name, pattern in DEFAULT_CLAIMS.items()
                            if name not in self.claims and name in {tool.name for tool in model.tools}})
        self.reward_weights = self._checked_reward()  # type: ignore[misc]
        self._violation_cases = self._compiled_violation_plan()
        super().__init__()
        self._scenario_files = self._checked_scenario_files()
        for split, file in self._scenario_files.items():
            try:
                self._splits[split] = load_scenarios(file, self)
            except ScenarioError as exc:
                raise DomainError(str(exc)) from None
        families = [scenario.get("family", "") for split in self._splits.values() for scenario in split]
        self.families = tuple(dict.fromkeys(family for family in families if family))  # type: ignore[misc]
        self.digest = self._digest()

    # -- Task hooks ------------------------------------------------------------------------------

    def tool_functions(self) -> list[Any]:
        return list(self._tool_list)

    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        raise NotImplementedError(f"domain {self.name} ({self.source}) ships its scenarios as files; generate new "
                                  f"ones with your own script (see examples/domains/telecom_billing/generate.py)")

    def data_path(self, split: str) -> Path:
        if split not in self._scenario_files:
            raise DomainError(f"domain {self.name} has no {split} split: add scenarios.{split} to {self.doc.file}")
        return self._scenario_files[split]

    def default_reward(self) -> MultiObjectiveReward:
        """The domain's reward mix; ``policy_compliance`` counts the domain's claim patterns."""
        components = [PolicyCompliance(claims=self.claims) if name == "policy_compliance"
                      else PolicyKept(name.removeprefix("policy.")) if name.startswith("policy.")
                      else COMPONENTS[name]() for name in self.reward_weights]
        return MultiObjectiveReward(components, weights=self.reward_weights, name=f"{self.name}_reward")

    def violation_plan(self, scenario: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """The declared `violation` case that applies, else a guess: the first forbidden tool (or the
        last success-path call) with the success path's arguments, then the success reply as a claim."""
        scope = self._scenario_scope(scenario)
        for condition, tool, args, claim in self._violation_cases:
            if condition is None or condition.evaluate(scope):
                return ({"tool": tool, "args": {name: value.render(scope) for name, value in args.items()}},
                        str(claim.render(scope)))
        solution = scope["solution"]
        forbidden = list(scenario["goal"].get("forbid", []))
        tool = forbidden[0] if forbidden else (solution["calls"][-1]["tool"] if solution["calls"] else self.tools.names[0])
        known = {name: value for call in solution["calls"] for name, value in call["args"].items()}
        parameters = self.tools[tool].parameters["properties"]
        return {"tool": tool, "args": {k: v for k, v in known.items() if k in parameters}}, solution["reply"]

    # -- scenario validation -----------------------------------------------------------------------

    def validate_scenario(self, scenario: Mapping[str, Any]) -> None:
        """Tools and arguments named by the goal, the success path and the violation plan exist;
        the world holds the declared collections with the declared fields."""
        goal = scenario["goal"]
        for i, call in enumerate(goal.get("require", [])):
            self._check_call(call["tool"], call.get("args", {}), f"goal.require[{i}]", complete=False)
        for i, name in enumerate(goal.get("forbid", [])):
            self._check_tool(name, f"goal.forbid[{i}]")
        for i, call in enumerate((scenario.get("solution") or {}).get("calls", [])):
            self._check_call(call["tool"], call.get("args", {}), f"solution.calls[{i}]", complete=True)
        self.check_world(scenario)
        if self._violation_cases:
            try:
                call, _ = self.violation_plan(scenario)
            except ExpressionError as exc:
                raise ValueError(f"violation (in {self.doc.file}): {exc}") from None
            self._check_call(call["tool"], call["args"], f"violation (in {self.doc.file}).call", complete=True)

    def _check_tool(self, name: str, where: str) -> None:
        if name not in self.tools:
            raise ValueError(f"{where}: unknown tool {name!r} (tools: {', '.join(self.tools.names)})")

    def _check_call(self, name: str, args: Mapping[str, Any], where: str, *, complete: bool) -> None:
        self._check_tool(name, f"{where}.tool")
        tool = self.tools[name]
        properties = tool.parameters["properties"]
        for arg in args:
            if arg not in properties:
                raise ValueError(f"{where}.args.{arg}: {name} has no parameter {arg!r} "
                                 f"(parameters: {', '.join(properties) or 'none'})")
        # a goal names only the arguments that matter: their types are checked, absent ones are free
        checked = tool if complete else dataclasses.replace(tool, required=[])
        _, problem = checked.validate(dict(args))
        if problem:
            raise ValueError(f"{where}.args: {problem}")

    def check_world(self, scenario: Mapping[str, Any]) -> None:
        world = scenario.get("world", {})
        for name, collection in self.model.collections.items():
            table = world.get(name)
            if not isinstance(table, dict):
                got = "missing" if table is None else f"a {type(table).__name__}"
                raise ValueError(f"world.{name}: expected an object of key -> record (the domain declares collection "
                                 f"{name!r}), got {got}")
            for key, record in table.items():
                _check_record(f"world.{name}.{key}", record, collection)
            if collection.key_fact is not None:
                value = scenario.get("facts", {}).get(collection.key_fact)
                if value is not None and str(value) not in table:
                    raise ValueError(f"facts.{collection.key_fact}: {value!r} is not in world.{name}")

    # -- loading ---------------------------------------------------------------------------------

    def _scenario_scope(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        scope: dict[str, Any] = dict(self.model.constants)
        scope.update({name: scenario.get(name) for name in SCENARIO_NAMES})
        scope.update(solution=self.solution(scenario), scenario=dict(scenario))
        return scope

    def _checked_ledgers(self) -> list[str]:
        for i, ledger in enumerate(self.model.ledgers):
            if not ledger.isidentifier() or ledger in ("world", "actions", "turn", VIOLATED_POLICIES):
                raise self.doc.error(("ledgers", i), f"{ledger!r} cannot name a ledger (use an identifier that is not "
                                                     f"a state key of the environment)")
            if ledger in self.model.ledgers[:i]:
                raise self.doc.error(("ledgers", i), f"duplicate ledger {ledger!r}")
        return list(self.model.ledgers)

    def _checked_constants(self) -> None:
        for name in self.model.constants:
            if not str(name).isidentifier() or name in ("world", "revealed_facts", *self.model.ledgers):
                raise self.doc.error(("constants", name), f"{name!r} cannot name a constant (an identifier that is not "
                                                          f"world, revealed_facts or a ledger)")
        for name, collection in self.model.collections.items():
            if collection.key_fact is not None and not collection.key_fact.isidentifier():
                raise self.doc.error(("collections", name, "key_fact"), "key_fact must name a fact key")

    def _checked_reward(self) -> dict[str, float]:
        weights = dict(self.model.reward) if self.model.reward is not None else dict(DEFAULT_WEIGHTS)
        for name, weight in weights.items():
            policy = name.removeprefix("policy.") if name.startswith("policy.") else None
            if (policy is None and name not in COMPONENTS) or (policy is not None and policy not in self.model.policies):
                raise self.doc.error(("reward", name), f"unknown reward component {name!r} (components: "
                                                       f"{', '.join(COMPONENTS)}; or policy.NAME for a declared policy: "
                                                       f"{', '.join(self.model.policies) or 'none'})")
            if weight < 0:
                raise self.doc.error(("reward", name), f"weight {weight} is negative")
        if not weights or sum(weights.values()) <= 0:
            raise self.doc.error(("reward",), "the weights must have a positive sum")
        return weights

    def _compiled_violation_plan(self) -> list[tuple[Expression | None, str, dict[str, Template], Template]]:
        checker = ScopeChecker(self.model, self.doc, dict.fromkeys([*self.model.constants, *SCENARIO_NAMES]))
        tool_names = [tool.name for tool in self._tool_list]
        cases = []
        for i, case in enumerate(self.model.violation):
            path = ("violation", i)
            if case.call.tool not in tool_names:
                raise self.doc.error((*path, "call", "tool"), f"unknown tool {case.call.tool!r} (tools: "
                                                              f"{', '.join(tool_names)})")
            condition = checker.expression(case.when, (*path, "when")) if case.when is not None else None
            args = {name: checker.template(value, (*path, "call", "args", name)) for name, value in case.call.args.items()}
            cases.append((condition, case.call.tool, args, checker.template(case.claim, (*path, "claim"))))
        return cases

    def _checked_scenario_files(self) -> dict[str, Path]:
        files = self.model.scenarios
        result = {}
        for split, name in (("train", files.train), ("eval", files.eval)):
            if name is None:
                continue
            path = self.directory / name
            if not path.is_file():
                if split == "eval" and "eval" not in files.model_fields_set:
                    continue  # the default eval.jsonl is optional
                raise self.doc.error(("scenarios", split), f"scenario file {path} not found")
            result[split] = path
        return result

    def _digest(self) -> str:
        """sha256 of the domain's files (YAML, scenario files, python tool files next to it)."""
        digest = hashlib.sha256()
        files = [Path(self.doc.file), *self._scenario_files.values()]
        files += [self.directory / tool.python.partition(":")[0] for tool in self.model.tools
                  if tool.python and tool.python.partition(":")[0].endswith(".py")]
        for file in files:
            digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        return digest.hexdigest()

    def describe_source(self) -> str:
        """``domain telecom_billing from examples/domains/telecom_billing (sha256 1a2b3c4d5e6f)``."""
        return f"domain {self.name} from {self.source} (sha256 {self.digest[:12]})"

    def __repr__(self) -> str:
        return f"FileDomainTask(name={self.name!r}, source={self.source!r}, tools={self.tools.names})"


def _check_record(where: str, record: Any, collection: CollectionModel) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a record (object), got {json.dumps(record)[:40]}")
    fields = collection.fields
    if fields is None:
        return
    missing = [name for name, spec in fields.items() if not spec.optional and name not in record]
    if missing:
        raise ValueError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for name, value in record.items():
        if name not in fields:
            raise ValueError(f"{where}.{name}: unknown field (declared fields: {', '.join(fields)})")
        problem = _field_problem(fields[name], value)
        if problem:
            raise ValueError(f"{where}.{name}: {problem}")


def _field_problem(spec: FieldSpec, value: Any) -> str | None:
    if spec.enum is not None and value not in spec.enum:
        return f"{value!r} is not one of {', '.join(map(repr, spec.enum))}"
    if not _TYPE_CHECKS[spec.type](value):
        return f"expected {'an' if spec.type[0] in 'aeio' else 'a'} {spec.type}, got {json.dumps(value)[:40]}"
    return None
