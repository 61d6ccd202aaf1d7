"""Multi-turn rollouts: many independent episodes advanced together, one batched generation per step.

All live conversations (up to `concurrency`) are sampled in a single `generate` call; each
episode then steps its own environment (tools run, the simulated user replies). Finished
episodes leave the batch and waiting ones take their place, so the batch stays full. An episode
whose next prompt is over the agent's prompt-token limit ends there, with end reason
``context_limit`` (its turns so far are scored and trained like any ended episode).

The environments of one step are stepped together (``astep`` under one event loop), so simulated
users backed by a chat model (`user_factory`, envs/llm_user_factory.py) answer concurrently. An
episode whose user could not reply (`UserChatError`) ends with end reason ``user_error``: it is
returned (in order, like the others) for the caller to drop, not to score.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from stateset_agents.core.trajectory import Trajectory, TurnSample
from stateset_agents.envs.llm_user_factory import UserChatError

USER_ERROR = "user_error"
"""End reason of an episode whose simulated user failed to reply (dropped by the trainer and evaluation)."""


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
    user_factory: Callable[[Any, dict, int | None], Any] | None = None,
    **sampling,
) -> tuple[list[Trajectory], RolloutStats]:
    """Run every episode to its end; trajectories come back in the order of `specs`.

    `user_factory(task, scenario, episode_seed)` makes each episode's simulated user (None: the
    task's own, the rule-based user)."""
    started = time.perf_counter()
    stats = RolloutStats()
    pending = deque(enumerate(specs))
    live: dict[int, _LiveEpisode] = {}
    finished: dict[int, Trajectory] = {}
    while pending or live:
        while pending and len(live) < concurrency:
            index, spec = pending.popleft()
            env = _make_env(spec, max_turns, user_factory)
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
        stats.completion_tokens += sum(len(turn.completion_ids) for turn in turns)
        for index, result in zip(order, _step_all([live[i] for i in order], turns)):
            if result is not None:
                finished[index] = result
                stats.episodes += 1
                del live[index]
                if on_episode_done is not None:
                    on_episode_done(result)
    stats.seconds = time.perf_counter() - started
    return [finished[i] for i in range(len(specs))], stats


def _make_env(spec: EpisodeSpec, max_turns: int, user_factory):
    if user_factory is None:
        return spec.task.make_env(spec.scenario, max_turns=max_turns)
    return spec.task.make_env(spec.scenario, max_turns=max_turns,
                              user=lambda scenario: user_factory(spec.task, scenario, spec.seed))


def _step_all(episodes: list[_LiveEpisode], turns: list[TurnSample]) -> list[Trajectory | None]:
    """Apply each sampled turn to its episode, all environments at once; each ended episode's Trajectory."""
    from stateset_agents.rollout.vllm_client import run_sync

    for episode, turn in zip(episodes, turns):
        episode.turns.append(turn)
        episode.messages.append(turn.parsed.to_message())

    async def step(episode: _LiveEpisode, turn: TurnSample):
        astep = getattr(episode.env, "astep", None)  # a duck-typed environment may be synchronous only
        try:
            return await astep(turn.parsed) if astep is not None else episode.env.step(turn.parsed)
        except UserChatError as error:
            return error

    results = run_sync(_gather(step(e, t) for e, t in zip(episodes, turns)))
    return [_after_step(episode, result) for episode, result in zip(episodes, results)]


async def _gather(coroutines) -> list:
    return list(await asyncio.gather(*coroutines))


def _after_step(episode: _LiveEpisode, result) -> Trajectory | None:
    if isinstance(result, UserChatError):
        trajectory = _end(episode, USER_ERROR)
        trajectory.state["user_error"] = str(result)
        return trajectory
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
