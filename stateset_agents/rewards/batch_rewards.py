"""The framework's entry point for rewards: score a batch of trajectories concurrently.

`score_trajectories` calls ``reward_fn.compute_reward(trajectory)`` (or ``reward_fn(trajectory)``
for a plain callable), sync or async, for all trajectories at once (``asyncio.gather``), turns
what comes back into `RewardResult`s, and writes ``trajectory.reward`` /
``trajectory.reward_components``. A reward with ``prepare_batch(trajectories)`` (sync or async) is
given the whole batch first (an LLM judge scoring each group in one call). When a reward raises (or
returns something that is not a number):

- ``error_policy="fail"``: raise `RewardError` naming the reward and the scenario id;
- ``error_policy="skip"``: that trajectory's result is None, and the batch counts it
  (``results.num_skipped``, ``results.errors``); the trainer should drop it from its group.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any, Literal

from stateset_agents.core.trajectory import Trajectory
from stateset_agents.rewards.base import RewardError, RewardResult, reward_name, to_reward_result

__all__ = ["ScoredBatch", "score_trajectories", "score_trajectories_sync"]

ErrorPolicy = Literal["fail", "skip"]


class ScoredBatch(list):
    """``list[RewardResult | None]`` plus what was skipped: `num_skipped` and `errors`."""

    def __init__(self, results: Sequence[RewardResult | None] = (), errors: Sequence[RewardError] = ()) -> None:
        super().__init__(results)
        self.errors: list[RewardError] = list(errors)

    @property
    def num_skipped(self) -> int:
        return sum(result is None for result in self)


def _reward_callable(reward_fn: Any) -> Any:
    method = getattr(reward_fn, "compute_reward", None)
    if callable(method):
        return method
    if callable(reward_fn):
        return reward_fn
    raise TypeError(f"reward_fn needs compute_reward(trajectory) or to be callable; got {reward_fn!r}")


async def _score_one(fn: Any, trajectory: Trajectory) -> RewardResult | BaseException:
    try:
        value = fn(trajectory)
        if inspect.isawaitable(value):
            value = await value
        return to_reward_result(value)
    except Exception as exc:  # noqa: BLE001 - handled per error_policy by the caller
        return exc


async def score_trajectories(reward_fn: Any, trajectories: Sequence[Trajectory],
                             error_policy: ErrorPolicy = "fail") -> ScoredBatch:
    """Score every trajectory concurrently; see the module docstring for the error policy."""
    if error_policy not in ("fail", "skip"):
        raise ValueError(f"error_policy must be 'fail' or 'skip', got {error_policy!r}")
    fn = _reward_callable(reward_fn)
    prepare = getattr(reward_fn, "prepare_batch", None)
    if callable(prepare) and trajectories:
        try:
            prepared = prepare(list(trajectories))
            if inspect.isawaitable(prepared):
                await prepared
        except Exception as exc:  # noqa: BLE001 - handled per error_policy, for every trajectory of the batch
            error = RewardError(reward_name(reward_fn), "(batch preparation)", exc)
            if error_policy == "fail":
                raise error from exc
            return ScoredBatch([None] * len(trajectories), [error])
    outcomes = await asyncio.gather(*(_score_one(fn, trajectory) for trajectory in trajectories))
    results: list[RewardResult | None] = []
    errors: list[RewardError] = []
    for trajectory, outcome in zip(trajectories, outcomes):
        if isinstance(outcome, BaseException):
            error = RewardError(reward_name(reward_fn), str(trajectory.scenario.get("id", "?")), outcome)
            if error_policy == "fail":
                raise error from outcome
            errors.append(error)
            results.append(None)
            continue
        trajectory.reward = outcome.total
        trajectory.reward_components = dict(outcome.components)
        results.append(outcome)
    return ScoredBatch(results, errors)


def score_trajectories_sync(reward_fn: Any, trajectories: Sequence[Trajectory],
                            error_policy: ErrorPolicy = "fail") -> ScoredBatch:
    """`score_trajectories` from synchronous code (no event loop may be running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(score_trajectories(reward_fn, trajectories, error_policy))
    raise RuntimeError("score_trajectories_sync was called inside a running event loop; "
                       "use `await score_trajectories(...)` there instead")
