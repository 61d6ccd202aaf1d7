"""Simulated users: the other side of the conversation.

`RuleBasedUser` is driven by its scenario and reacts to what the agent actually did:

1. the goal is met in the environment state *and* the agent's message says so (the goal's
   ``say`` phrases) -> the user thanks the agent and the episode ends with ``success``;
2. the agent asked for hidden facts (keyword match on its visible text) -> the user gives them;
3. the agent did something forbidden, or claims a resolution the state does not show -> push back;
4. otherwise the user nudges (or restates the problem when asked something it cannot answer).

A turn is *unhelpful* when it is rude, pushed back on, or made no progress (no new fact asked for,
no successful tool call since the user last spoke). After `patience` unhelpful turns the user
gives up (``gave_up``). Phrasing varies with a seeded `random.Random`, so replies are
deterministic for a given seed. `LLMUserSimulator` (in `llm_user`) plays the user with any chat
model instead.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from stateset_agents.core.messages import message_text
from stateset_agents.envs.facts import FactSpec, fact_asked, fact_spec
from stateset_agents.envs.goals import says_all

__all__ = ["UserContext", "UserReply", "UserSimulator", "RuleBasedUser", "RUDE_PATTERN", "is_rude"]

RUDE_PATTERN = re.compile(
    r"\b(stupid|idiot\w*|dumb|shut up|whatever|not my problem|your (own )?fault|stop bothering|"
    r"ridiculous|figure it out yourself|annoying|useless)\b", re.I)

_PHRASES: dict[str, tuple[str, ...]] = {
    "accept": ("Ok, thank you.", "Thanks, that answers it.", "Great, thanks for your help."),
    "give_up": ("This is not helping. Goodbye.", "Forget it, I will go elsewhere.", "I give up. Bye."),
    "nudge": ("That does not help me.", "I still need help with this.", "Can you please fix my problem?"),
    "pushback": ("That is not right. It is not fixed.", "No, that did not solve it.",
                 "That is wrong, please check again."),
    "rude": ("There is no need to be rude.", "Please be polite."),
    "unsaid": ("So is it done? What happens now?", "Ok, so what is the result?"),
    "empty": ("Hello? Are you there?", "Hello?"),
    "restate": ("As I said: {problem}", "Again: {problem}"),
    "polite_prefix": ("Sure. ", "Of course. ", ""),
}


def is_rude(text: str) -> bool:
    """The text contains a rude phrase."""
    return RUDE_PATTERN.search(text) is not None


@dataclass
class UserContext:
    """What a simulated user sees when it is its turn to speak.

    - `agent_text`: the visible text of the assistant's latest turn.
    - `messages`: the conversation so far, including that assistant turn.
    - `state`: the environment state (read it, don't change it).
    - `progress`: successful tool calls since the user last spoke.
    """

    agent_text: str
    messages: list[dict[str, Any]]
    state: dict[str, Any]
    progress: int = 0


@dataclass
class UserReply:
    """The user's message plus what it means for the episode.

    `outcome` is ``"success"`` (satisfied), ``"gave_up"`` or ``""`` (conversation goes on);
    `revealed` maps fact keys to the values given in this reply; `unhelpful` marks a strike
    against the agent's turn.
    """

    content: str
    done: bool = False
    outcome: str = ""
    revealed: dict[str, str] = field(default_factory=dict)
    unhelpful: bool = False


@runtime_checkable
class UserSimulator(Protocol):
    """Anything that can reply to the agent, synchronously and asynchronously."""

    def reply(self, ctx: UserContext) -> UserReply: ...

    async def areply(self, ctx: UserContext) -> UserReply: ...


class RuleBasedUser:
    """A deterministic scripted user for one scenario (single use, like its environment)."""

    def __init__(self, scenario: Mapping[str, Any], *, fact_specs: Mapping[str, FactSpec] | None = None,
                 patience: int = 3, seed: int = 0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.facts: dict[str, Any] = dict(scenario.get("facts", {}))
        self.specs = {key: fact_spec(key, fact_specs) for key in self.facts}
        self.say: list[list[str]] = list(scenario.get("goal", {}).get("say", []))
        self.persona = str(scenario.get("persona", "polite"))
        self.problem = str(scenario.get("opening", "I need help."))
        self.patience = patience
        self.strikes = 0
        self.revealed: set[str] = set()
        self.rng = random.Random(seed)

    async def areply(self, ctx: UserContext) -> UserReply:
        return self.reply(ctx)

    def reply(self, ctx: UserContext) -> UserReply:
        """React to the agent's latest visible text and the environment state."""
        text = ctx.agent_text.strip()
        claims = bool(self.say) and says_all(self.say, text)
        if ctx.state.get("goal_met") and claims:
            return UserReply(self._pick("accept"), done=True, outcome="success")
        parts: list[str] = []
        rude = is_rude(text)
        if rude:
            parts.append(self._pick("rude"))
        asked = [key for key, spec in self.specs.items() if fact_asked(spec, text)]
        new_facts = [key for key in asked if key not in self.revealed]
        progress = bool(new_facts) or ctx.progress > 0
        revealed: dict[str, str] = {}
        if asked:
            revealed = {key: str(self.facts[key]) for key in asked}
            self.revealed.update(asked)
            parts.append(self._reveal(revealed))
        elif ctx.state.get("goal_failed") or (claims and not ctx.state.get("goal_met")):
            progress = False
            parts.append(self._pick("pushback"))
        elif ctx.state.get("goal_met"):
            parts.append(self._pick("unsaid"))
        elif not text:
            parts.append(self._pick("empty"))
        elif text.endswith("?"):
            parts.append(self._pick("restate").format(problem=self.problem))
        else:
            parts.append(self._pick("nudge"))
        unhelpful = rude or not progress
        self.strikes += int(unhelpful)
        if self.strikes >= self.patience:
            return UserReply(self._pick("give_up"), done=True, outcome="gave_up", revealed=revealed,
                             unhelpful=unhelpful)
        return UserReply(" ".join(parts), revealed=revealed, unhelpful=unhelpful)

    def _reveal(self, values: Mapping[str, str]) -> str:
        prefix = self._pick("polite_prefix") if self.persona == "polite" else ""
        sentences = [self.rng.choice(self.specs[key].reveal).format(value=value) for key, value in values.items()]
        return prefix + " ".join(sentences)

    def _pick(self, kind: str) -> str:
        return self.rng.choice(_PHRASES[kind])

