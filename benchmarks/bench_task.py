"""A single-turn task for our trainer, registered only inside the benchmark process.

Each scenario is one fixed conversation (system + user, no tools); the episode is one assistant
turn; the reward is `common.parity_reward` of the sampled ids, exactly what the TRL run scores.
Scenarios are served in the benchmark's prompt schedule order (`ScheduledSampler`), so both
frameworks see the same prompts in the same iterations.
"""

from __future__ import annotations

from typing import Any

from stateset_agents.envs.base import StepResult
from stateset_agents.tasks.registry import register_task

TASK_NAME = "bench_single_turn"


class _NoTools:
    names: list[str] = []

    def schemas(self):
        return None  # no tool declarations in the prompt (TRL renders with tools=None too)


class _SingleTurnEnv:
    def __init__(self, scenario: dict[str, Any]):
        self.messages = [dict(m) for m in scenario["messages"]]

    def reset(self) -> list[dict]:
        return [dict(m) for m in self.messages]

    def step(self, turn) -> StepResult:
        return StepResult(messages=[], done=True, reason="max_turns", state={})


class ParityReward:
    name = "parity"

    def __call__(self, trajectory) -> float:
        from common import parity_reward

        return parity_reward(trajectory.turns[0].completion_ids)


class SingleTurnTask:
    """Duck-typed `Task`: what GSPOTrainer and the rollout runner use."""

    name = TASK_NAME
    schedule: list[list[dict]] = []

    def __init__(self) -> None:
        self.tools = _NoTools()

    def train_scenarios(self) -> list[dict[str, Any]]:
        return [{"id": f"p{i}", "messages": messages} for i, messages in enumerate(self.schedule)]

    def eval_scenarios(self) -> list[dict[str, Any]]:
        return self.train_scenarios()

    def make_env(self, scenario, *, max_turns: int = 1, **_):
        return _SingleTurnEnv(scenario)

    def default_reward(self):
        return ParityReward()


class ScheduledSampler:
    """Replaces the trainer's shuffling sampler: hands out scenarios in schedule order."""

    def __init__(self, scenarios: list[dict[str, Any]]):
        self.scenarios = scenarios
        self.position = 0

    def sample(self, count: int) -> list[dict[str, Any]]:
        drawn = self.scenarios[self.position:self.position + count]
        self.position += count
        return drawn


def register(schedule: list[list[dict]]) -> str:
    SingleTurnTask.schedule = schedule
    register_task(SingleTurnTask)
    return TASK_NAME
