"""`TaskEnvironment`: the scenario-driven environment shared by every task.

A task supplies the system prompt, tools, the opening message, hidden-fact specs and its
task-specific starting state (order store, catalog...); this class runs the loop: tool calls
execute against the per-episode state and are logged in ``state["actions"]``; turns without tool
calls go to the simulated user; the goal is re-checked after every tool call.

State keys (all JSON-serialisable), besides the task's own:
``task``, ``scenario_id``, ``turn`` (assistant turns so far), ``actions`` (the ledger, see
`envs.goals`), ``policy_violations`` (list of str, appended by tools), ``revealed_facts``
(key -> value the user has given), ``goal_met``, ``goal_failed``, ``user_turns``,
``user_strikes`` (unhelpful turns as judged by the user), ``user_confirmed``, ``done``,
``end_reason``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from stateset_agents.core.completion import ParsedCompletion, ToolCall
from stateset_agents.envs.base import Environment, StepResult
from stateset_agents.envs.facts import FactSpec
from stateset_agents.envs.goals import goal_failed, goal_met
from stateset_agents.envs.tools import ToolSet
from stateset_agents.envs.users import RuleBasedUser, UserContext, UserReply, UserSimulator

__all__ = ["TaskEnvironment", "TaskSpec", "UserArg"]


class TaskSpec(Protocol):
    """What `TaskEnvironment` needs from a task."""

    name: str
    system_prompt: str
    tools: ToolSet
    fact_specs: Mapping[str, FactSpec]

    def initial_state(self, scenario: dict[str, Any]) -> dict[str, Any]: ...

    def opening_message(self, scenario: dict[str, Any]) -> dict[str, Any]: ...


UserArg = UserSimulator | Callable[[dict[str, Any]], UserSimulator] | None
"""A user simulator instance, a factory ``scenario -> simulator``, or None for `RuleBasedUser`."""


class TaskEnvironment(Environment):
    """A single-use episode of one task on one scenario."""

    def __init__(self, task: TaskSpec, scenario: Mapping[str, Any], *, max_turns: int = 6,
                 user: UserArg = None, seed: int = 0, patience: int = 3) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.task = task
        self.scenario: dict[str, Any] = copy.deepcopy(dict(scenario))
        self.max_turns = max_turns
        self.state = self._initial_state()
        self.user = self._make_user(user, seed, patience)
        self._history: list[dict[str, Any]] = []
        self._started = False
        self._progress = 0

    def _initial_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "task": self.task.name, "scenario_id": self.scenario.get("id", ""), "turn": 0,
            "actions": [], "policy_violations": [], "revealed_facts": {},
            "goal_met": False, "goal_failed": False, "user_turns": 0, "user_strikes": 0,
            "user_confirmed": False, "done": False, "end_reason": "",
        }
        state.update(copy.deepcopy(self.task.initial_state(self.scenario)))
        return state

    def _make_user(self, user: UserArg, seed: int, patience: int) -> UserSimulator:
        if user is None:
            return RuleBasedUser(self.scenario, fact_specs=self.task.fact_specs, patience=patience, seed=seed)
        if hasattr(user, "reply") and hasattr(user, "areply"):
            return user  # type: ignore[return-value]
        if callable(user):
            return user(self.scenario)
        raise TypeError(f"user must be a UserSimulator, a factory scenario -> simulator, or None; got {user!r}")

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self.task.tools.schemas()

    def end(self, reason: str) -> dict[str, Any]:
        return self._result([], reason).state

    def reset(self) -> list[dict[str, Any]]:
        if self._started:
            raise RuntimeError("environments are single-use; make a new one with task.make_env(scenario)")
        self._started = True
        messages = [{"role": "system", "content": self.task.system_prompt},
                    self.task.opening_message(self.scenario)]
        self._history = copy.deepcopy(messages)
        return messages

    def step(self, turn: ParsedCompletion) -> StepResult:
        tool_step = self._begin_turn(turn)
        if tool_step is not None:
            return tool_step
        return self._finish_with_user(self.user.reply(self._user_context(turn)))

    async def astep(self, turn: ParsedCompletion) -> StepResult:
        tool_step = self._begin_turn(turn)
        if tool_step is not None:
            return tool_step
        return self._finish_with_user(await self.user.areply(self._user_context(turn)))

    # -- internals ---------------------------------------------------------------------------

    def _begin_turn(self, turn: ParsedCompletion) -> StepResult | None:
        """Count the turn; run its tool calls (returning the result) or return None for the user."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self.state["done"]:
            raise RuntimeError(f"the episode is over ({self.state['end_reason']}); make a new environment")
        self.state["turn"] += 1
        self._history.append(turn.to_message())
        if not turn.tool_calls:
            return None
        messages = [self._run_tool(call) for call in turn.tool_calls]
        self._history.extend(copy.deepcopy(messages))
        return self._result(messages, "max_turns" if self.state["turn"] >= self.max_turns else "")

    def _run_tool(self, call: ToolCall) -> dict[str, Any]:
        outcome = self.task.tools.run(call, self.state)
        self.state["actions"].append({"tool": call.name, "args": copy.deepcopy(outcome.arguments),
                                      "ok": outcome.ok, "result": outcome.content, "turn": self.state["turn"]})
        self._progress += int(outcome.ok)
        goal = self.scenario.get("goal", {})
        self.state["goal_met"] = goal_met(goal, self.state["actions"])
        self.state["goal_failed"] = goal_failed(goal, self.state["actions"])
        return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": outcome.content}

    def _user_context(self, turn: ParsedCompletion) -> UserContext:
        return UserContext(agent_text=turn.content or "", messages=copy.deepcopy(self._history),
                           state=copy.deepcopy(self.state), progress=self._progress)

    def _finish_with_user(self, reply: UserReply) -> StepResult:
        self._progress = 0
        self.state["user_turns"] += 1
        self.state["user_strikes"] += int(reply.unhelpful)
        self.state["revealed_facts"].update(reply.revealed)
        message = {"role": "user", "content": reply.content}
        self._history.append(dict(message))
        reason = ""
        if reply.done and reply.outcome == "success":
            reason = "success" if self.state["goal_met"] else "user_done"
        elif reply.done:
            reason = "user_gave_up"
        elif self.state["turn"] >= self.max_turns:
            reason = "max_turns"
        self.state["user_confirmed"] = reason == "success"
        return self._result([message], reason)

    def _result(self, messages: list[dict[str, Any]], reason: str) -> StepResult:
        if reason:
            self.state["done"] = True
            self.state["end_reason"] = reason
        return StepResult(messages=messages, done=bool(reason), reason=reason, state=copy.deepcopy(self.state))
