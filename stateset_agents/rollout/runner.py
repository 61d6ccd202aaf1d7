"""Multi-turn rollouts: many independent episodes advanced together, one batched generation per step.

All live conversations (up to `concurrency`) are sampled in a single `generate` call; each
episode then steps its own environment (tools run, the simulated user replies). Finished
episodes leave the batch and waiting ones take their place, so the batch stays full.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from stateset_agents.core.trajectory import Trajectory, TurnSample


@dataclass
class EpisodeSpec:
    """One episode to run: a scenario of a task, and the group it belongs to (for advantages)."""

    task: Any  # stateset_agents.tasks Task
    scenario: dict[str, Any]
    group_id: int = 0


@dataclass
class _LiveEpisode:
    spec: EpisodeSpec
    env: Any
    messages: list[dict]
    turns: list[TurnSample] = field(default_factory=list)


@dataclass
class RolloutStats:
    episodes: int = 0
    generate_calls: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


def run_episodes(
    agent,
    specs: list[EpisodeSpec],
    *,
    max_turns: int = 6,
    concurrency: int = 32,
    on_episode_done: Callable[[Trajectory], None] | None = None,
    **sampling,
) -> tuple[list[Trajectory], RolloutStats]:
    """Run every episode to its end; trajectories come back in the order of `specs`."""
    started = time.perf_counter()
    stats = RolloutStats()
    pending = deque(enumerate(specs))
    live: dict[int, _LiveEpisode] = {}
    finished: dict[int, Trajectory] = {}
    while pending or live:
        while pending and len(live) < concurrency:
            index, spec = pending.popleft()
            env = spec.task.make_env(spec.scenario, max_turns=max_turns)
            live[index] = _LiveEpisode(spec, env, list(env.reset()))
        order = list(live)
        tools = live[order[0]].spec.task.tools.schemas()
        same_tools = all(live[i].spec.task is live[order[0]].spec.task for i in order)
        turns = _generate(agent, [live[i] for i in order], tools if same_tools else None, sampling)
        stats.generate_calls += 1
        stats.batch_sizes.append(len(order))
        for index, turn in zip(order, turns):
            episode = live[index]
            stats.completion_tokens += len(turn.completion_ids)
            result = _advance(episode, turn)
            if result is not None:
                finished[index] = result
                stats.episodes += 1
                del live[index]
                if on_episode_done is not None:
                    on_episode_done(result)
    stats.seconds = time.perf_counter() - started
    return [finished[i] for i in range(len(specs))], stats


def _generate(agent, episodes: list[_LiveEpisode], tools, sampling) -> list[TurnSample]:
    if tools is not None:
        return agent.generate([e.messages for e in episodes], tools=tools, **sampling)
    # mixed tasks in one batch: each conversation declares its own tools, still one generate call
    prompts = [agent.encode(e.messages, e.spec.task.tools.schemas()) for e in episodes]
    return agent.generate_encoded(prompts, **sampling)


def _advance(episode: _LiveEpisode, turn: TurnSample) -> Trajectory | None:
    """Apply the sampled turn to the episode; return its Trajectory when it ended."""
    episode.turns.append(turn)
    episode.messages.append(turn.parsed.to_message())
    result = episode.env.step(turn.parsed)
    episode.messages.extend(result.messages)
    if not result.done:
        return None
    return Trajectory(
        messages=episode.messages,
        turns=episode.turns,
        state=result.state,
        scenario=episode.spec.scenario,
        task=episode.spec.task.name,
        group_id=episode.spec.group_id,
        end_reason=result.reason,
    )
