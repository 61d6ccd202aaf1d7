"""Multi-turn rollouts: many independent episodes advanced together, one batched generation per step.

All live conversations (up to `concurrency`) are sampled in a single `generate` call; each
episode then steps its own environment (tools run, the simulated user replies). Finished
episodes leave the batch and waiting ones take their place, so the batch stays full. An episode
whose next prompt is over the agent's prompt-token limit ends there, with end reason
``context_limit`` (its turns so far are scored and trained like any ended episode).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from stateset_agents.core.trajectory import Trajectory, TurnSample


@dataclass
class EpisodeSpec:
    """One episode to run: a scenario of a task, the group it belongs to (for advantages), and the
    seed its sampled turns derive theirs from (None: the global RNG decides)."""

    task: Any  # stateset_agents.tasks Task
    scenario: dict[str, Any]
    group_id: int = 0
    seed: int | None = None

    def turn_seed(self, turn: int) -> int | None:
        """The sampling seed of the episode's `turn`-th assistant turn (a fixed mix of both numbers)."""
        return None if self.seed is None else (self.seed * 1_000_003 + turn) % 2**62


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
        # each conversation declares its own task's tools; mixed tasks still share one generate call
        prompts = {i: agent.encode(e.messages, e.spec.task.tools.schemas()) for i, e in live.items()}
        limit = agent.prompt_token_limit(sampling.get("max_new_tokens"))
        for index in [i for i, prompt in prompts.items() if limit is not None and len(prompt.input_ids) > limit]:
            finished[index] = _end(live.pop(index), "context_limit")
            stats.episodes += 1
            if on_episode_done is not None:
                on_episode_done(finished[index])
        order = list(live)
        if not order:
            continue
        seeds = [live[i].spec.turn_seed(len(live[i].turns)) for i in order]
        turns = agent.generate_encoded([prompts[i] for i in order], seeds=seeds, **sampling)
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


def _advance(episode: _LiveEpisode, turn: TurnSample) -> Trajectory | None:
    """Apply the sampled turn to the episode; return its Trajectory when it ended."""
    episode.turns.append(turn)
    episode.messages.append(turn.parsed.to_message())
    result = episode.env.step(turn.parsed)
    episode.messages.extend(result.messages)
    if not result.done:
        return None
    return _trajectory(episode, result.state, result.reason)


def _end(episode: _LiveEpisode, reason: str) -> Trajectory:
    """End an episode the environment would have continued (its state records the reason)."""
    return _trajectory(episode, episode.env.end(reason), reason)


def _trajectory(episode: _LiveEpisode, state: dict[str, Any], reason: str) -> Trajectory:
    return Trajectory(
        messages=episode.messages,
        turns=episode.turns,
        state=state,
        scenario=episode.spec.scenario,
        task=episode.spec.task.name,
        group_id=episode.spec.group_id,
        end_reason=reason,
    )
