"""Reward protocol: results, errors, and what a reward component is.

A reward function is any object with ``compute_reward(trajectory)`` (sync or async) or a plain
callable ``trajectory -> ...``. It may return a float, a `RewardResult`, or a dict
(``{"total": float, "components": {...}}``, or a dict of component scores whose mean is the total);
`to_reward_result` normalises all of these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from stateset_agents.core.trajectory import Trajectory

__all__ = ["RewardResult", "RewardError", "RewardComponent", "to_reward_result", "reward_name", "clamp01"]


@dataclass
class RewardResult:
    """A trajectory's scalar reward and its named components (each in [0, 1] for built-ins)."""

    total: float
    components: dict[str, float] = field(default_factory=dict)


class RewardError(RuntimeError):
    """A reward function failed on a trajectory; says which reward and which scenario."""

    def __init__(self, reward: str, scenario_id: str, cause: BaseException) -> None:
        self.reward = reward
        self.scenario_id = scenario_id
        self.cause = cause
        super().__init__(f"reward '{reward}' failed on scenario '{scenario_id}': "
                         f"{type(cause).__name__}: {cause}")


@runtime_checkable
class RewardComponent(Protocol):
    """One objective: ``name`` and ``__call__(trajectory) -> float in [0, 1]``; deterministic."""

    name: str

    def __call__(self, trajectory: Trajectory) -> float: ...


def clamp01(value: float) -> float:
    """Clamp into [0, 1]."""
    return min(1.0, max(0.0, float(value)))


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return float(value)


def to_reward_result(value: Any) -> RewardResult:
    """Normalise whatever a reward returned; raises TypeError/ValueError on anything else."""
    if isinstance(value, RewardResult):
        components = {name: _finite(score, f"component {name!r}") for name, score in value.components.items()}
        return RewardResult(_finite(value.total, "total"), components)
    if isinstance(value, Mapping):
        if "total" in value:
            components = dict(value.get("components") or {})
            return to_reward_result(RewardResult(value["total"], components))
        components = {str(name): _finite(score, f"component {name!r}") for name, score in value.items()}
        if not components:
            raise ValueError("reward returned an empty dict")
        return RewardResult(sum(components.values()) / len(components), components)
    return RewardResult(_finite(value, "reward"))


def reward_name(reward_fn: Any) -> str:
    """A readable name: its ``name`` attribute, else its class or function name."""
    name = getattr(reward_fn, "name", None)
    if isinstance(name, str) and name:
        return name
    if hasattr(reward_fn, "__qualname__"):
        return str(reward_fn.__qualname__)
    return type(reward_fn).__name__
