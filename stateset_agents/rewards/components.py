"""Reward components: small deterministic objectives, each ``__call__(trajectory) -> [0, 1]``.

They read the trajectory's final environment state (``state["actions"]``, ``goal_met``,
``policy_violations``, the user's verdicts), its scenario (the goal) and its messages (what the
agent said). When a custom environment keeps no action ledger, the ledger is rebuilt from the
assistant's ``tool_calls`` and the tool messages (a result starting with ``error:`` failed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stateset_agents.core.formats import load_json
from stateset_agents.core.messages import message_text
from stateset_agents.core.trajectory import Trajectory
from stateset_agents.envs.goals import goal_progress, required_done
from stateset_agents.envs.tools import ERROR_PREFIX
from stateset_agents.envs.users import is_rude
from stateset_agents.rewards.base import RewardComponent, clamp01

__all__ = ["GoalReached", "ToolUse", "PolicyCompliance", "Helpfulness", "Concision", "Format",
           "DEFAULT_CLAIMS", "DEFAULT_WEIGHTS", "COMPONENTS", "make_component", "trajectory_actions",
           "unbacked_claims", "assistant_texts"]

DEFAULT_CLAIMS: dict[str, str] = {
    "issue_refund": r"\b(refunded|issued (a|the|your) refund)\b",
    "create_return": r"\b(created|opened|started) (a|the|your) return\b",
    "track_delivery": r"\b(arrives|on its way|in transit)\b",
    "escalate": r"\bescalated\b",
    # telling the customer the case went to a team is the effect of a hand-off tool; said without one, the
    # case went nowhere (the warm start's habit, scripted_agents.DeflectingAgent)
    "escalate|open_ticket": r"\b(passed|forwarded|sent|handed|transferred|referred)\b[^.!?]{0,40}\bto (a|an|our|the|my) "
                            r"(\w+ )?(team|colleague|specialist|supervisor|department)\b|\blogged your (request|case)\b",
    "reset_password": r"\b(i have|i've) reset\b|\bpassword (has been|was) reset\b",
    "open_ticket": r"\bopened (a|an|the|your)?\s*(\w+ )?ticket\b|\bticket \w+ (is|was|has been) opened\b",
    "restart_device": r"\brestarted\b",
    "check_service_status": r"\b(there is|there's) an outage\b",
    "apply_discount": r"\b\d+(\.\d+)?% off\b|\bdiscount (is|was|has been) applied\b",
    "create_quote": r"\b(created|made|prepared) (a|the|your) quote\b|\bquote q\d+\b",
}
"""Phrases that claim a tool's effect -> the tool that must have succeeded before they are said ("a|b": either)."""

_EMPATHY = re.compile(r"\b(sorry|apologi[sz]e|i understand|i see|thanks for|thank you for)\b", re.I)
_POLITE = re.compile(r"\b(please|thank you|thanks|happy to help|glad to help|you're welcome)\b", re.I)


def assistant_texts(trajectory: Trajectory) -> list[str]:
    """Visible text of every assistant message that has some."""
    return [text for message in trajectory.messages if message.get("role") == "assistant"
            for text in [message_text(message).strip()] if text]


def trajectory_actions(trajectory: Trajectory) -> list[dict[str, Any]]:
    """The action ledger: ``state["actions"]`` or, failing that, rebuilt from the messages."""
    if isinstance(trajectory.state.get("actions"), list):
        return trajectory.state["actions"]
    calls: dict[str, dict[str, Any]] = {}
    actions: list[dict[str, Any]] = []
    for message in trajectory.messages:
        for call in message.get("tool_calls") or []:
            calls[call.get("id", "")] = call.get("function", {})
        if message.get("role") == "tool":
            function = calls.get(message.get("tool_call_id", ""), {})
            args = function.get("arguments")
            actions.append({"tool": message.get("name") or function.get("name", ""),
                            "args": _decode_args(args), "ok": not message_text(message).startswith(ERROR_PREFIX)})
    return actions


def _decode_args(args: Any) -> dict[str, Any] | None:
    if isinstance(args, dict):
        return args
    try:
        decoded = load_json(args) if isinstance(args, str) else None
    except ValueError:  # not JSON, or NaN/Infinity (never a valid action)
        return None
    return decoded if isinstance(decoded, dict) else None


def unbacked_claims(messages: list[dict[str, Any]], claims: Mapping[str, str] = DEFAULT_CLAIMS) -> list[str]:
    """Claims the agent made before the tool that backs them had succeeded (``"tool: text"``)."""
    patterns = {tool: re.compile(pattern, re.I) for tool, pattern in claims.items()}
    call_names: dict[str, str] = {}
    succeeded: set[str] = set()
    found: list[str] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            text = message_text(message)
            found += [f"{tools}: {text}" for tools, pattern in patterns.items()
                      if succeeded.isdisjoint(tools.split("|")) and pattern.search(text)]
            for call in message.get("tool_calls") or []:
                call_names[call.get("id", "")] = call.get("function", {}).get("name", "")
        elif role == "tool" and not message_text(message).startswith(ERROR_PREFIX):
            succeeded.add(message.get("name") or call_names.get(message.get("tool_call_id", ""), ""))
    return found


class GoalReached:
    """1 when the goal is met and the user confirmed; 0.8 when met but unconfirmed; otherwise
    0.4 x the fraction of required tool calls done (a shaping signal for small models)."""

    name = "goal_reached"

    def __init__(self, unconfirmed: float = 0.8, partial: float = 0.4) -> None:
        self.unconfirmed = unconfirmed
        self.partial = partial

    def __call__(self, trajectory: Trajectory) -> float:
        state = trajectory.state
        if state.get("goal_met"):
            return 1.0 if state.get("user_confirmed") else self.unconfirmed
        goal = trajectory.scenario.get("goal", {})
        return clamp01(self.partial * goal_progress(goal, trajectory_actions(trajectory)))


class ToolUse:
    """0.6 x share of the goal's required calls made (right tool, right key arguments) +
    0.4 x share of all calls that succeeded (no unknown tools, bad arguments or tool errors)."""

    name = "tool_use"

    def __call__(self, trajectory: Trajectory) -> float:
        actions = trajectory_actions(trajectory)
        goal = trajectory.scenario.get("goal", {})
        done = required_done(goal, actions)
        if not actions:
            return 0.0 if done else 1.0
        coverage = sum(done) / len(done) if done else 1.0
        validity = sum(bool(action.get("ok")) for action in actions) / len(actions)
        return clamp01(0.6 * coverage + 0.4 * validity)


class PolicyCompliance:
    """1 minus `penalty` per policy violation recorded by the tools (refund above the order
    total or cap, refund of an intact item out of window, discount above the maximum...) and per
    unbacked claim (saying "refunded" before a successful ``issue_refund``)."""

    name = "policy_compliance"

    def __init__(self, claims: Mapping[str, str] | None = None, penalty: float = 0.5) -> None:
        self.claims = dict(DEFAULT_CLAIMS if claims is None else claims)
        self.penalty = penalty

    def __call__(self, trajectory: Trajectory) -> float:
        violations = len(trajectory.state.get("policy_violations", []))
        claims = len(unbacked_claims(trajectory.messages, self.claims))
        return clamp01(1.0 - self.penalty * (violations + claims))


class Helpfulness:
    """Empathy and politeness of the agent's text (acknowledges the issue, polite phrases; each
    rude turn costs 0.5), averaged with the user's verdict (share of the agent's turns the
    simulated user did not find unhelpful) when the environment records it."""

    name = "helpfulness"

    def __call__(self, trajectory: Trajectory) -> float:
        texts = assistant_texts(trajectory)
        if not texts:
            return 0.0
        empathy = any(_EMPATHY.search(text) for text in texts)
        polite = any(_POLITE.search(text) for text in texts)
        rude_turns = sum(is_rude(text) for text in texts)
        text_score = clamp01((empathy + polite) / 2 - 0.5 * rude_turns)
        user_turns = trajectory.state.get("user_turns", 0)
        if not user_turns:
            return text_score
        user_score = 1.0 - trajectory.state.get("user_strikes", 0) / user_turns
        return clamp01(0.5 * text_score + 0.5 * user_score)


class Concision:
    """Mean over visible answers: 1 up to `full` words, falling linearly to 0 at `zero` words;
    0 when the agent never answered in text."""

    name = "concision"

    def __init__(self, full: int = 40, zero: int = 150) -> None:
        self.full, self.zero = full, zero

    def __call__(self, trajectory: Trajectory) -> float:
        texts = assistant_texts(trajectory)
        if not texts:
            return 0.0
        scores = [clamp01((self.zero - len(text.split())) / (self.zero - self.full)) for text in texts]
        return sum(scores) / len(scores)


class Format:
    """Mean over sampled turns of: thinking closed, turn terminated, no parse errors (1/3 each)."""

    name = "format"

    def __call__(self, trajectory: Trajectory) -> float:
        if not trajectory.turns:
            return 0.0
        scores = [(turn.parsed.thinking_closed + turn.parsed.terminated + (not turn.parsed.errors)) / 3
                  for turn in trajectory.turns]
        return sum(scores) / len(scores)


COMPONENTS: dict[str, type] = {cls.name: cls for cls in
                               (GoalReached, ToolUse, PolicyCompliance, Helpfulness, Concision, Format)}

DEFAULT_WEIGHTS: dict[str, float] = {"goal_reached": 0.5, "tool_use": 0.2, "policy_compliance": 0.1,
                                     "helpfulness": 0.1, "concision": 0.05, "format": 0.05}
"""General-purpose weights; the task-free parts (policy, style, format) sum to 0.3 at most, so an
agent that never acts cannot score above 0.3."""


def make_component(spec: str | RewardComponent) -> RewardComponent:
    """A component instance from its name (see `COMPONENTS`) or the instance itself."""
    if isinstance(spec, str):
        if spec not in COMPONENTS:
            raise ValueError(f"unknown reward component {spec!r}; available: {', '.join(COMPONENTS)}")
        return COMPONENTS[spec]()
    if not callable(spec) or not isinstance(getattr(spec, "name", None), str):
        raise TypeError(f"a reward component needs a str `name` and __call__(trajectory); got {spec!r}")
    return spec
