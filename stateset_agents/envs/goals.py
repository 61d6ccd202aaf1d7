"""Goals: what "solved" means, checked against the environment's action ledger.

A scenario's goal is data::

    {"description": "You want a refund of $25.00 for order A1234.",
     "require": [{"tool": "lookup_order", "args": {"order_id": "A1234"}},
                 {"tool": "issue_refund", "args": {"order_id": "A1234", "amount": 25.0}}],
     "forbid": ["create_return"],
     "say": [["refund"]]}

- `require`: successful tool calls that must appear in the ledger, in this order unless
  ``"ordered": false``; `args` is a subset match (strings compared case-insensitively, numbers
  within 0.01; other arguments are free).
- `forbid`: tools that must not have succeeded (e.g. a refund when the answer is "no").
- `say`: groups of phrases the agent's closing message must contain (one phrase of each group)
  for the simulated user to accept the resolution.

The ledger (``state["actions"]``) holds one entry per executed call:
``{"tool": str, "args": dict | None, "ok": bool, "result": str, "turn": int}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["args_match", "call_matches", "required_done", "goal_met", "goal_failed", "goal_progress",
           "says_all"]

NUMBER_TOLERANCE = 0.01


def _value_matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return (isinstance(actual, (int, float)) and not isinstance(actual, bool)
                and abs(float(actual) - float(expected)) <= NUMBER_TOLERANCE)
    if isinstance(expected, str):
        return isinstance(actual, str) and actual.strip().casefold() == expected.strip().casefold()
    return bool(expected == actual)


def args_match(expected: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """Every expected argument is present in `actual` with a matching value."""
    if actual is None:
        return False
    return all(name in actual and _value_matches(value, actual[name]) for name, value in expected.items())


def call_matches(expected: Mapping[str, Any], action: Mapping[str, Any]) -> bool:
    """A successful ledger entry for the expected ``{"tool", "args"}``."""
    return (bool(action.get("ok")) and action.get("tool") == expected["tool"]
            and args_match(expected.get("args", {}), action.get("args")))


def required_done(goal: Mapping[str, Any], actions: Iterable[Mapping[str, Any]]) -> list[bool]:
    """For each required call, whether the ledger contains it.

    With ``goal["ordered"]`` (the default) a required call only counts when it comes after the
    previous required call that was found: looking an order up *after* refunding it does not count.
    """
    actions = list(actions)
    if not goal.get("ordered", True):
        return [any(call_matches(req, action) for action in actions) for req in goal.get("require", [])]
    done, position = [], 0
    for req in goal.get("require", []):
        index = next((i for i in range(position, len(actions)) if call_matches(req, actions[i])), None)
        done.append(index is not None)
        position = index + 1 if index is not None else position
    return done


def goal_failed(goal: Mapping[str, Any], actions: Iterable[Mapping[str, Any]]) -> bool:
    """A forbidden tool succeeded: the goal can no longer be met."""
    forbidden = set(goal.get("forbid", []))
    return any(action.get("ok") and action.get("tool") in forbidden for action in actions)


def goal_met(goal: Mapping[str, Any], actions: Iterable[Mapping[str, Any]]) -> bool:
    """All required calls succeeded and no forbidden tool did."""
    actions = list(actions)
    return all(required_done(goal, actions)) and not goal_failed(goal, actions)


def goal_progress(goal: Mapping[str, Any], actions: Iterable[Mapping[str, Any]]) -> float:
    """Fraction of required calls done, in [0, 1] (0 once a forbidden tool succeeded)."""
    actions = list(actions)
    if goal_failed(goal, actions):
        return 0.0
    done = required_done(goal, actions)
    return sum(done) / len(done) if done else 1.0


def says_all(groups: Sequence[Sequence[str]], text: str) -> bool:
    """`text` contains one phrase from every group (case-insensitive); True for no groups."""
    lowered = text.lower()
    return all(any(phrase.lower() in lowered for phrase in group) for group in groups)
