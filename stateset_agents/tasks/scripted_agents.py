"""Scripted agents: reference behaviour of known quality, for tests and the supervised warm start.

Each agent reads the conversation so far and the scenario, and produces the next
`ParsedCompletion` (short reasoning, visible content, tool calls with Kimi ids
``functions.NAME:IDX``, IDX counting tool calls within the conversation from 0):

- `OracleAgent`: the scenario's success path: asks for the missing facts, calls the right tools
  one per turn, then states the outcome politely;
- `MediocreAgent`: the oracle with seeded lapses: a redundant question, a skipped step (redone after
  the user pushes back), a mistyped id, sometimes twice (the tool's error comes back; the agent
  retries with the right id, or first asks the customer to confirm it), a vague closing, no empathy;
- `DeflectingAgent`: the oracle up to the resolving step (the solution's last call), then hands the
  case off to "the team" instead of resolving it, every turn after: the capable agent with the habit
  RL is for (the warm start mixes some in, see `training.warm_start`);
- `UnhelpfulAgent`: polite filler; never uses a tool, never resolves;
- `RudeAgent`: the success path in rude words;
- `PolicyBreakingAgent`: asks for the facts, then breaks the task's policy (refund above the
  total, discount above the maximum, reset of an account the user never gave) and claims a
  resolution no tool backs.

`run_scripted_episode` and `generate_reference_dialogues` (in `tasks.episodes`) drive them through
the real environment loop; they are re-exported here.
"""

from __future__ import annotations

import json
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from stateset_agents.core.formats import load_json
from stateset_agents.core.completion import ParsedCompletion, ToolCall
from stateset_agents.core.messages import message_text
from stateset_agents.envs.facts import fact_revealed_in, fact_spec
from stateset_agents.envs.goals import args_match
from stateset_agents.envs.tools import ERROR_PREFIX
from stateset_agents.tasks.base import Task

__all__ = ["ScriptedAgent", "OracleAgent", "MediocreAgent", "DeflectingAgent", "UnhelpfulAgent", "RudeAgent", "PolicyBreakingAgent",
           "AGENTS", "make_agent"]


@dataclass
class Progress:
    """What the conversation shows so far: facts the user gave, tool calls that succeeded."""

    revealed: set[str] = field(default_factory=set)
    done_calls: list[dict[str, Any]] = field(default_factory=list)
    num_calls: int = 0

    def called(self, call: dict[str, Any]) -> bool:
        return any(done["tool"] == call["tool"] and args_match(call["args"], done["args"]) for done in self.done_calls)


def read_progress(messages: list[dict[str, Any]], scenario: dict[str, Any]) -> Progress:
    """Scan the conversation for revealed facts and successful tool calls."""
    progress = Progress()
    user_text = " ".join(message_text(m) for m in messages if m.get("role") == "user")
    progress.revealed = {key for key, value in scenario.get("facts", {}).items() if fact_revealed_in(value, user_text)}
    pending: dict[str, dict[str, Any]] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            progress.num_calls += 1
            pending[call["id"]] = {"tool": call["function"]["name"], "args": _arguments(call["function"])}
        if message.get("role") == "tool" and not message_text(message).startswith(ERROR_PREFIX):
            if message.get("tool_call_id") in pending:
                progress.done_calls.append(pending[message["tool_call_id"]])
    return progress


def _arguments(function: dict[str, Any]) -> dict[str, Any]:
    try:
        decoded = load_json(function.get("arguments") or "{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _tidy_args(task: Task | None, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments in schema order, whole-number floats written as ints (``300`` not ``300.0``)."""
    order = list(task.tools[tool].parameters["properties"]) if task is not None and tool in task.tools else []
    keys = [key for key in order if key in args] + [key for key in args if key not in order]
    return {key: int(args[key]) if isinstance(args[key], float) and args[key].is_integer() else args[key]
            for key in keys}


def completion(messages: list[dict[str, Any]], reasoning: str, content: str = "",
               calls: list[dict[str, Any]] = (), task: Task | None = None) -> ParsedCompletion:
    """A well-formed turn; tool call ids continue the conversation's ``functions.NAME:IDX`` count."""
    start = sum(len(m.get("tool_calls") or []) for m in messages)
    tool_calls = []
    for i, call in enumerate(calls):
        args = _tidy_args(task, call["tool"], call["args"])
        tool_calls.append(ToolCall(id=f"functions.{call['tool']}:{start + i}", name=call["tool"], arguments=args,
                                   raw_arguments=json.dumps(args)))
    return ParsedCompletion(reasoning=reasoning, content=content, tool_calls=tool_calls)


def questions(task: Task, keys: list[str]) -> str:
    return " ".join(fact_spec(key, task.fact_specs).question for key in keys)


class ScriptedAgent(ABC):
    """An agent whose turns are computed, not sampled. Call `begin_episode` before each episode."""

    name: str = "scripted"
    quality: str = "bad"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def begin_episode(self, task: Task, scenario: dict[str, Any], seed: int = 0) -> None:
        """Reset per-episode memory; seeded from (agent seed, episode seed, scenario id)."""
        self.rng = random.Random(f"{self.name}:{self.seed}:{seed}:{scenario.get('id', '')}")

    @abstractmethod
    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        """The next assistant turn given the conversation so far."""


class OracleAgent(ScriptedAgent):
    """Follows the scenario's success path."""

    name, quality = "oracle", "oracle"

    def next_step(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any],
                  skip: tuple[int, ...] = ()) -> tuple[str, Any]:
        """("ask", [fact keys]) | ("call", call) | ("reply", None)."""
        progress = read_progress(messages, scenario)
        missing = [key for key in scenario.get("facts", {}) if key not in progress.revealed]
        if missing:
            return "ask", missing
        for index, call in enumerate(task.solution(scenario)["calls"]):
            if index not in skip and not progress.called(call):
                return "call", call
        return "reply", None

    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        return self.render(self.next_step(messages, task, scenario), messages, task, scenario)

    def render(self, step: tuple[str, Any], messages: list[dict[str, Any]], task: Task,
               scenario: dict[str, Any]) -> ParsedCompletion:
        solution = task.solution(scenario)
        kind, payload = step
        if kind == "ask":
            return completion(messages, solution["ask_why"], f"{solution['opener']} {questions(task, payload)}".strip())
        if kind == "call":
            why = payload.get("why") or f"Next I call {payload['tool']}."
            if _last_call_failed(messages):
                why = f"That call failed; I will check the details and call {payload['tool']} again."
            return completion(messages, why, "", [payload], task)
        return completion(messages, solution["reply_why"], solution["reply"])


def _last_call_failed(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[-1].get("role") == "tool" and message_text(messages[-1]).startswith(ERROR_PREFIX)


_ID = re.compile(r"[A-Z]+\d+")


def _mistyped(args: dict[str, Any], rng: random.Random, taken: str = "") -> dict[str, Any] | None:
    """`args` with one digit of its first id argument (``A1234``) changed, to an id that does not
    occur in `taken` (another real order would not fail); None when there is no id argument."""
    for key, value in args.items():
        if isinstance(value, str) and _ID.fullmatch(value):
            digits = [i for i, ch in enumerate(value) if ch.isdigit()]
            typos = [value[:i] + d + value[i + 1:] for i in digits for d in "0123456789" if d != value[i]]
            free = [typo for typo in typos if typo not in taken]
            return {**args, key: rng.choice(free or typos)}
    return None


class MediocreAgent(OracleAgent):
    """The oracle with seeded lapses; usually still solves the task, less cleanly."""

    name, quality = "mediocre", "mediocre"

    def begin_episode(self, task: Task, scenario: dict[str, Any], seed: int = 0) -> None:
        super().begin_episode(task, scenario, seed)
        calls = task.solution(scenario)["calls"]
        self.redundant = self.rng.random() < 0.5
        self.skip = (0,) if len(calls) > 1 and self.rng.random() < 0.4 else ()
        self.vague = self.rng.random() < 0.3
        self.cold = self.rng.random() < 0.5
        self.replies = 0
        # Failed calls followed by a retry or a question, never by a claim: the model's own failed
        # calls are where it learned to say "I have created a quote" regardless.
        roll = self.rng.random()
        self.mistypes = 2 if roll < 0.25 else 1 if roll < 0.75 else 0  # wrong ids typed before the right one
        # after the last wrong id: ask the customer to confirm it (always after two), else retry at once
        self.confirm_after_error = self.mistypes == 2 or self.rng.random() < 0.5
        self.mistyped_turns: list[int] = []  # indexes among this episode's turns: examples not to imitate

    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        if self.redundant:
            self.redundant = False
            return completion(messages, "I should understand the problem better.",
                              "Can you tell me more about the problem?")
        skipping = bool(self.skip) and not self.replies
        kind, payload = self.next_step(messages, task, scenario, self.skip if skipping else ())
        wrong = _mistyped(payload["args"], self.rng, json.dumps(scenario)) if kind == "call" and self.mistypes else None
        if wrong is not None:
            self.mistypes -= 1
            self.mistyped_turns.append(sum(m.get("role") == "assistant" for m in messages))
            return self.render((kind, {**payload, "args": wrong}), messages, task, scenario)
        if kind == "call" and self.confirm_after_error and _last_call_failed(messages):
            self.confirm_after_error = False
            asked = [key for key, value in scenario.get("facts", {}).items() if value in payload["args"].values()]
            if asked:  # ask the customer to confirm the fact the failed call needed, then call again
                nouns = " and ".join(fact_spec(key, task.fact_specs).noun for key in asked)
                return completion(messages, f"That call failed; I should confirm the {nouns}.",
                                  f"I'm sorry, I could not find that {nouns}. {questions(task, asked)}")
        if kind == "call" and skipping and not _last_call_failed(messages):
            return completion(messages, f"I will call {payload['tool']} now.", "", [payload], task)
        if kind == "reply":
            self.replies += 1
            if self.vague and self.replies == 1:
                return completion(messages, "I think it is done.", "It is all sorted now.")
        if kind == "ask" and self.cold:
            nouns = " and ".join(fact_spec(key, task.fact_specs).noun for key in payload)
            return completion(messages, task.solution(scenario)["ask_why"], f"What is your {nouns}?")
        return self.render((kind, payload), messages, task, scenario)


class DeflectingAgent(OracleAgent):
    """Asks for the facts and makes the preliminary calls like the oracle, then, where the oracle would
    make the resolving call (the solution's last), passes the case on instead, and keeps doing so.
    A deflection claims nothing, so the customer nudges and finally gives up: the episode fails."""

    name, quality = "deflecting", "deflecting"
    LINES = ("Thank you. I have passed your case to our support team; they will email you soon.",
             "Thanks, I have noted everything and forwarded it to a colleague who will follow up with you.",
             "I have logged your request with the right team. You will hear from them shortly.")

    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        kind, payload = self.next_step(messages, task, scenario)
        calls = task.solution(scenario)["calls"]
        if kind == "ask" or (kind == "call" and payload != calls[-1]):
            return self.render((kind, payload), messages, task, scenario)
        return completion(messages, "Another team can handle the rest.", self.rng.choice(self.LINES))


class UnhelpfulAgent(ScriptedAgent):
    """Polite filler: never uses a tool, never resolves anything."""

    name = "unhelpful"
    LINES = ("I understand. Please check our help center for more information.",
             "Thanks for reaching out. Our website has answers to common questions.",
             "I see. Please try again later.")

    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        return completion(messages, "I will give a general answer.", self.rng.choice(self.LINES))


_POLITE = re.compile(r"(^|(?<=[.!?] ))(thank|sorry|please|great)[^.!?]*[.!?]\s*|\bI'm sorry,?\s*", re.I)


def _impolite(text: str) -> str:
    """`text` without its polite sentences and apologies."""
    stripped = _POLITE.sub("", text).strip()
    return stripped[:1].upper() + stripped[1:]


class RudeAgent(OracleAgent):
    """The success path, said rudely."""

    name = "rude"

    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        kind, payload = self.next_step(messages, task, scenario)
        if kind == "ask":
            nouns = " and ".join(fact_spec(key, task.fact_specs).noun for key in payload)
            return completion(messages, "This user is annoying.", f"Ugh, whatever. Give me your {nouns}.")
        if kind == "reply":
            reply = _impolite(task.solution(scenario)["reply"])
            return completion(messages, "Done; I want this user gone.", f"{reply} Now stop bothering me.")
        return self.render((kind, payload), messages, task, scenario)


class PolicyBreakingAgent(OracleAgent):
    """Gets the facts, then breaks the policy and claims a resolution it never made."""

    name = "policy_breaking"

    def act(self, messages: list[dict[str, Any]], task: Task, scenario: dict[str, Any]) -> ParsedCompletion:
        kind, payload = self.next_step(messages, task, scenario)
        if kind == "ask":
            return self.render((kind, payload), messages, task, scenario)
        call, claim = task.violation_plan(scenario)
        if not read_progress(messages, scenario).num_calls:
            return completion(messages, "The fastest fix is to just do it.", "", [call], task)
        return completion(messages, "I will tell the user it is done.", claim)


AGENTS: dict[str, type[ScriptedAgent]] = {cls.name: cls for cls in
                                          (OracleAgent, MediocreAgent, DeflectingAgent, UnhelpfulAgent, RudeAgent,
                                                     PolicyBreakingAgent)}


def make_agent(name: str, seed: int = 0) -> ScriptedAgent:
    """A scripted agent by name (see `AGENTS`)."""
    if name not in AGENTS:
        raise ValueError(f"unknown scripted agent {name!r}; valid: {', '.join(AGENTS)}")
    return AGENTS[name](seed)

