"""Running scripted agents through the real environment loop, and reference dialogues for SFT.

`run_scripted_episode` is the same loop a trainer runs with a model (see `envs.base`), with a
scripted agent in place of the sampler; its `TurnSample`s carry no tokens (empty lists).
`generate_reference_dialogues` mixes oracle, mediocre and bad episodes and labels each with its
quality and reward, for the supervised warm start.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from typing import Any

from stateset_agents.core.trajectory import Trajectory, TurnSample
from stateset_agents.envs.task_env import UserArg
from stateset_agents.tasks.base import Task
from stateset_agents.tasks.registry import get_task
from stateset_agents.tasks.scripted_agents import ScriptedAgent, make_agent

__all__ = ["run_scripted_episode", "generate_reference_dialogues", "DEFAULT_MIX", "BAD_AGENTS"]

DEFAULT_MIX = {"oracle": 0.7, "mediocre": 0.2, "deflecting": 0.0, "bad": 0.1}
BAD_AGENTS = ("unhelpful", "rude", "policy_breaking")


def run_scripted_episode(task: Task | str, scenario: Mapping[str, Any], agent: ScriptedAgent, seed: int = 0, *,
                         max_turns: int = 6, user: UserArg = None) -> Trajectory:
    """Play one episode of `agent` on `scenario` and return its trajectory (reward not yet set)."""
    task = get_task(task) if isinstance(task, str) else task
    env = task.make_env(scenario, max_turns=max_turns, user=user, seed=seed)
    agent.begin_episode(task, env.scenario, seed)
    messages = env.reset()
    turns: list[TurnSample] = []
    while True:
        turn = agent.act(copy.deepcopy(messages), task, env.scenario)
        turns.append(TurnSample(prompt_ids=[], completion_ids=[], logprobs=[], parsed=turn))
        messages.append(turn.to_message())
        result = env.step(turn)
        messages.extend(result.messages)
        if result.done:
            return Trajectory(messages=messages, turns=turns, state=result.state, scenario=copy.deepcopy(env.scenario),
                              task=task.name, end_reason=result.reason)


def _label_counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Split `n` by the mix proportions (largest remainder, so the counts sum to `n`)."""
    mix = {label: 0.0 if -1e-9 < weight < 0 else weight for label, weight in mix.items()}  # 1 - 0.7 - 0.3 < 0
    unknown = sorted(set(mix) - set(DEFAULT_MIX))
    if unknown or not mix or any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix must map some of {', '.join(DEFAULT_MIX)} to non-negative weights; got {dict(mix)}")
    total = sum(mix.values())
    exact = {label: n * weight / total for label, weight in mix.items()}
    counts = {label: int(value) for label, value in exact.items()}
    for label in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[label] += 1
    return counts


def generate_reference_dialogues(task: Task | str, n: int, seed: int = 0, mix: Mapping[str, float] | None = None, *,
                                 split: str = "train", scenarios: list[dict[str, Any]] | None = None,
                                 max_turns: int = 6) -> list[dict[str, Any]]:
    """`n` labelled conversations on `split` scenarios (or on `scenarios`, when given).

    Each item: ``{"task", "scenario_id", "quality" ("oracle" | "mediocre" | "deflecting" | "bad"), "agent",
    "reward", "reward_components", "end_reason", "messages", "tools"}`` (quality "deflecting": see
    `DeflectingAgent`); assistant messages carry
    ``reasoning_content``, ``content`` and ``tool_calls``; ``tools`` are the schemas for the chat
    template; ``mistyped_turns`` index the assistant turns that deliberately mistyped an id (their
    recovery is worth learning, the typo is not). Deterministic for a given seed.
    """
    task = get_task(task) if isinstance(task, str) else task
    rng = random.Random(f"dialogues:{task.name}:{seed}")
    labels = [label for label, count in _label_counts(n, mix or DEFAULT_MIX).items() for _ in range(count)]
    rng.shuffle(labels)
    scenarios = task.scenarios(split) if scenarios is None else scenarios
    order = list(range(len(scenarios)))
    rng.shuffle(order)
    reward = task.default_reward()
    dialogues = []
    for index, label in enumerate(labels):
        scenario = scenarios[order[index % len(order)]]
        agent = make_agent(rng.choice(BAD_AGENTS) if label == "bad" else label, seed=seed)
        trajectory = run_scripted_episode(task, scenario, agent, seed=seed + index, max_turns=max_turns)
        result = reward.score(trajectory)
        dialogues.append({"task": task.name, "scenario_id": scenario["id"], "quality": label, "agent": agent.name,
                          "reward": result.total, "reward_components": result.components,
                          "end_reason": trajectory.end_reason, "messages": trajectory.messages,
                          "tools": task.tools.schemas(),
                          "mistyped_turns": list(getattr(agent, "mistyped_turns", []))})
    return dialogues
