"""`MultiObjectiveReward`: a weighted mean of reward components.

Use it as is, with task weights (``task.default_reward()``), with your own components, or
subclass it and override `compute_reward` (the guide's pattern)::

    from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward

    class KimiReward(MultiObjectiveReward):
        async def compute_reward(self, trajectory):
            return reward   # a float (or a RewardResult / dict)

The framework calls rewards through `score_trajectories`, which accepts every return form.

A component may also be asynchronous (``async ascore(trajectory)``, e.g. `rewards.llm_judge.LLMJudge`),
may look at the whole batch first (``async prepare_batch(trajectories)``, called by
`score_trajectories` through this class), and may return None for an episode it could not score:
that component is then left out of the episode's weighted mean (the others' weights renormalised)
and out of its `components`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from stateset_agents.core.trajectory import Trajectory
from stateset_agents.rewards.base import RewardComponent, RewardResult, clamp01
from stateset_agents.rewards.components import DEFAULT_WEIGHTS, make_component

__all__ = ["MultiObjectiveReward"]


class MultiObjectiveReward:
    """Weighted mean of components, each clamped to [0, 1].

    Args:
        components: component instances or names (see `rewards.components.COMPONENTS`);
            None for the default set (goal, tool use, policy, helpfulness, concision, format).
        weights: a dict name -> weight (every component needs one) or a list aligned with
            `components`; None for `DEFAULT_WEIGHTS` with the default set, else equal weights.
        name: shown in errors and logs; defaults to the class name.
    """

    def __init__(self, components: Sequence[RewardComponent | str] | None = None,
                 weights: Mapping[str, float] | Sequence[float] | None = None, name: str | None = None) -> None:
        specs = list(DEFAULT_WEIGHTS) if components is None else list(components)
        self.components: list[RewardComponent] = [make_component(spec) for spec in specs]
        names = [component.name for component in self.components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate reward component names: {', '.join(duplicates)}")
        if weights is None:
            weights = DEFAULT_WEIGHTS if components is None else dict.fromkeys(names, 1.0)
        self.weights = self._check_weights(names, weights)
        self.name = name or type(self).__name__

    @staticmethod
    def _check_weights(names: list[str], weights: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
        if not isinstance(weights, Mapping):
            weights = list(weights)
            if len(weights) != len(names):
                raise ValueError(f"got {len(weights)} weights for {len(names)} components ({', '.join(names)})")
            weights = dict(zip(names, weights))
        unknown = sorted(set(weights) - set(names))
        missing = [n for n in names if n not in weights]
        if unknown or missing:
            raise ValueError(f"weights must name each component exactly: unknown {unknown}, missing {missing}; "
                             f"components are {', '.join(names)}")
        checked = {n: float(weights[n]) for n in names}
        if any(w < 0 for w in checked.values()) or sum(checked.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum; got {checked}")
        return checked

    def score(self, trajectory: Trajectory) -> RewardResult:
        """Synchronous scoring: every component, then their weighted mean."""
        return self.combine({component.name: component(trajectory) for component in self.components})

    async def ascore(self, trajectory: Trajectory) -> RewardResult:
        """`score`, with asynchronous components (``ascore``) awaited concurrently."""
        values = await asyncio.gather(*(_component_value(c, trajectory) for c in self.components))
        return self.combine({component.name: value for component, value in zip(self.components, values)})

    def combine(self, scores: Mapping[str, float | None]) -> RewardResult:
        """Weighted mean of the component scores (each clamped to [0, 1]); None scores are left out."""
        present = {name: clamp01(score) for name, score in scores.items() if score is not None}
        weight = sum(self.weights[name] for name in present)
        if weight <= 0:
            skipped = sorted(name for name, score in scores.items() if score is None)
            raise ValueError(f"no component with a positive weight could score this episode (skipped: {skipped})")
        total = sum(self.weights[n] * s for n, s in present.items()) / weight
        return RewardResult(total=total, components=present)

    async def prepare_batch(self, trajectories: Sequence[Trajectory]) -> None:
        """Let components that judge a batch together (an LLM judge in group mode) see it first."""
        await asyncio.gather(*(component.prepare_batch(trajectories) for component in self.components
                               if callable(getattr(component, "prepare_batch", None))))

    async def compute_reward(self, trajectory: Trajectory) -> Any:
        """The reward of one trajectory; subclasses may return a float instead."""
        return await self.ascore(trajectory)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={w:g}" for n, w in self.weights.items())
        return f"{type(self).__name__}(name={self.name!r}, weights={{{parts}}})"


async def _component_value(component: RewardComponent, trajectory: Trajectory) -> float | None:
    ascore = getattr(component, "ascore", None)
    return await ascore(trajectory) if callable(ascore) else component(trajectory)
