"""`Task`: everything one conversational task needs, shared by all built-in tasks.

A task subclass supplies data and small hooks, never a loop:

- `name`, `system_prompt`, `families`, `reward_weights`, `ledgers` (state lists its tools fill);
- `tool_functions()`: the plain typed functions exposed as tools (see `envs.tools`);
- `build_scenario(rng, ids, family, scenario_id)`: one generated scenario (used by
  `tasks.generate_data`; the shipped JSONL files are its output);
- `violation_plan(scenario)`: a policy-breaking call and claim, for `PolicyBreakingAgent`;
- optionally `check_world(scenario)`: extra validation of a scenario's world.

Everything else (loading and validating splits, building environments, the opening message with
an optional photo, the default reward, the scripted success path) lives here.
"""

from __future__ import annotations

import copy
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from stateset_agents.envs.facts import COMMON_FACTS, FactSpec
from stateset_agents.envs.task_env import TaskEnvironment, UserArg
from stateset_agents.envs.tools import ToolError, ToolSet, is_finite_number
from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
from stateset_agents.tasks.images import scenario_image_url
from stateset_agents.tasks.scenario_records import load_scenarios

__all__ = ["Task", "UniqueIds", "DATA_DIR", "SPLITS", "record_violation", "require_finite", "money", "scenario_text"]

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "eval")


def record_violation(state: dict[str, Any], message: str) -> None:
    """Note a policy violation in the episode state (rewards penalise each one)."""
    state.setdefault("policy_violations", []).append(message)


def require_finite(state: dict[str, Any], value: Any, what: str, policy: bool = True) -> None:
    """Refuse a NaN or infinite `value` (a ToolError), recorded as a violation when it feeds a
    `policy` limit: NaN fails every comparison, so ``amount > cap`` would let it through."""
    if not is_finite_number(value):
        if policy:
            record_violation(state, f"{what} {value!r:.40} is not a finite number")
        raise ToolError(f"{what} must be a finite number, got {value!r:.40}")


def money(amount: float) -> str:
    """``$25.00``."""
    return f"${amount:.2f}"


def scenario_text(*, opening: str, topic: str, opener: str, ask_why: str, calls: list[dict[str, Any]],
                  say: list[list[str]], description: str, reply: str, forbid: tuple[str, ...] = (),
                  reply_why: str = "It is done; I will tell the user.") -> dict[str, Any]:
    """The text fields of a generated scenario: opening, topic, goal and success path.

    `calls` are the success path's tool calls (``{"tool", "args", "why"}``); the goal requires
    each of them with the same arguments unless a call says ``"required": False``, and a call's
    ``"goal_args"`` (when given) replaces its arguments in the goal (free-text ones left out).
    """
    require = [{"tool": call["tool"], "args": dict(call.get("goal_args", call["args"]))}
               for call in calls if call.get("required", True)]
    path = [{"tool": call["tool"], "args": dict(call["args"]), "why": call["why"]} for call in calls]
    return {"opening": opening, "topic": topic,
            "goal": {"description": description, "require": require, "forbid": list(forbid), "say": say},
            "solution": {"opener": opener, "ask_why": ask_why, "calls": path, "reply": reply, "reply_why": reply_why}}


class UniqueIds:
    """Short random ids (``A1234``) never handed out twice: keeps train and eval disjoint."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def new(self, prefix: str, digits: int = 4) -> str:
        for _ in range(10_000):
            candidate = f"{prefix}{self.rng.randint(10 ** (digits - 1), 10 ** digits - 1)}"
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        raise RuntimeError(f"ran out of ids with prefix {prefix!r}")


class Task(ABC):
    """A conversational task: prompt, tools, scenarios, environments and reward."""

    name: ClassVar[str]
    system_prompt: ClassVar[str]
    families: ClassVar[tuple[str, ...]]
    reward_weights: ClassVar[dict[str, float]]
    ledgers: ClassVar[tuple[str, ...]] = ()
    fact_specs: ClassVar[Mapping[str, FactSpec]] = COMMON_FACTS
    id_prefix: ClassVar[str]

    def __init__(self) -> None:
        self.tools = ToolSet(self.tool_functions())
        self._splits: dict[str, list[dict[str, Any]]] = {}

    # -- hooks ---------------------------------------------------------------------------------

    @abstractmethod
    def tool_functions(self) -> list[Callable[..., Any]]:
        """The functions exposed as tools, in schema order."""

    @abstractmethod
    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        """Generate one scenario of `family` (deterministic given `rng`)."""

    @abstractmethod
    def violation_plan(self, scenario: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """A call that breaks this task's policy and the claim a careless agent makes afterwards."""

    def check_world(self, scenario: Mapping[str, Any]) -> None:
        """Raise ValueError when the scenario's world cannot support its goal (override)."""

    # -- scenarios -----------------------------------------------------------------------------

    def data_path(self, split: str) -> Path:
        return DATA_DIR / f"{self.name}_{split}.jsonl"

    def scenarios(self, split: str) -> list[dict[str, Any]]:
        """Validated scenarios of a shipped split (a fresh deep copy each call)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if split not in self._splits:
            self._splits[split] = load_scenarios(self.data_path(split), self)
        return copy.deepcopy(self._splits[split])

    def train_scenarios(self) -> list[dict[str, Any]]:
        return self.scenarios("train")

    def eval_scenarios(self) -> list[dict[str, Any]]:
        return self.scenarios("eval")

    def validate_scenario(self, scenario: Mapping[str, Any]) -> None:
        """Tools named by the goal and solution exist; then the task's own `check_world`."""
        goal = scenario["goal"]
        named = [call["tool"] for call in goal.get("require", [])] + list(goal.get("forbid", []))
        named += [call["tool"] for call in (scenario.get("solution") or {}).get("calls", [])]
        unknown = sorted({name for name in named if name not in self.tools})
        if unknown:
            raise ValueError(f"unknown tool(s) {', '.join(unknown)}; {self.name} has {', '.join(self.tools.names)}")
        self.check_world(scenario)

    # -- episodes --------------------------------------------------------------------------------

    def with_system_prompt(self, system_prompt: str | None) -> Task:
        """This task with `system_prompt` replacing its own in every environment it makes (a copy
        sharing tools and data); None returns the task unchanged."""
        if system_prompt is None:
            return self
        task = copy.copy(self)
        task.system_prompt = system_prompt  # type: ignore[misc]  # instance value over the ClassVar
        return task

    def make_env(self, scenario: Mapping[str, Any], *, max_turns: int = 6, user: UserArg = None,
                 seed: int = 0, patience: int = 3) -> TaskEnvironment:
        """A fresh single-use environment (the scenario is deep-copied).

        `user`: None for the rule-based user (phrasing seeded by `seed`, giving up after
        `patience` unhelpful turns), a simulator instance, or a factory ``scenario -> simulator``.
        """
        return TaskEnvironment(self, scenario, max_turns=max_turns, user=user, seed=seed, patience=patience)

    def initial_state(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        """Task part of the episode state: a private copy of the world plus empty ledgers."""
        state: dict[str, Any] = {"world": copy.deepcopy(scenario.get("world", {}))}
        state.update({ledger: [] for ledger in self.ledgers})
        return state

    def opening_message(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        """The user's first message; with a photo it is ``[text part, image_url part]``."""
        url = scenario_image_url(dict(scenario))
        if url is None:
            return {"role": "user", "content": scenario["opening"]}
        return {"role": "user", "content": [{"type": "text", "text": scenario["opening"]},
                                            {"type": "image_url", "image_url": {"url": url}}]}

    def default_reward(self) -> MultiObjectiveReward:
        """The task's reward: default components with this task's weights."""
        return MultiObjectiveReward(weights=self.reward_weights, name=f"{self.name}_reward")

    # -- scripted success path -------------------------------------------------------------------

    def solution(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        """The scenario's success path; derived from the goal when the scenario has none."""
        if scenario.get("solution"):
            return copy.deepcopy(dict(scenario["solution"]))
        goal = scenario["goal"]
        said = ", ".join(group[0] for group in goal.get("say", []) if group)
        return {"opener": "I'm sorry about that.", "ask_why": "I need a few details first.",
                "calls": [dict(call) for call in goal.get("require", [])],
                "reply": f"All done: {said}. Thank you for your patience." if said else "All done. Thank you!",
                "reply_why": "Everything is done; I will tell the user."}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, tools={self.tools.names})"
