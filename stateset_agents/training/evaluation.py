"""Held-out evaluation: run a task's scenarios through the real environment loop and score them.

Sampling uses its own seeded RNG (the caller's RNG state is saved and restored), so evaluating
in the middle of training neither perturbs the run nor depends on where it happens. With an LLM
customer (`user_factory`), episodes whose customer could not reply are left out of every mean and
counted (``user_failures``); its replies are cached by episode seed and conversation, so a repeat
evaluation of the same weights replays them exactly.
"""

from __future__ import annotations

import random
import statistics
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from stateset_agents.rollout.runner import USER_ERROR, EpisodeSpec, run_episodes


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with fixed seeds, then put every RNG back as it was."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def is_success(trajectory) -> bool:
    return bool(trajectory.state.get("goal_met")) or trajectory.end_reason == "success"


def cut_off_share(trajectories) -> float:
    """Share of the agent's turns cut off at max_new_tokens (0 when there are no turns)."""
    turns = sum(t.num_turns for t in trajectories)
    return sum(t.num_cut_off_turns for t in trajectories) / turns if turns else 0.0


def summarize(trajectories, results) -> dict[str, Any]:
    """Mean/std reward, success rate and mean components over scored trajectories; `user_failures`
    counts the episodes dropped because their LLM customer failed."""
    scored = [(t, r) for t, r in zip(trajectories, results) if r is not None]
    rewards = [r.total for _, r in scored]
    summary: dict[str, Any] = {
        "reward_mean": statistics.fmean(rewards) if rewards else float("nan"),
        "reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "success_rate": statistics.fmean(is_success(t) for t, _ in scored) if scored else float("nan"),
        "episodes": len(scored),
        "turns_mean": statistics.fmean(t.num_turns for t, _ in scored) if scored else 0.0,
        "cut_off_turns": cut_off_share([t for t, _ in scored]),
        "user_failures": sum(t.end_reason == USER_ERROR for t in trajectories),
    }
    components = sorted({name for _, r in scored for name in r.components})
    for name in components:  # over the episodes the component scored (an LLM judge may skip some)
        summary[f"component/{name}"] = statistics.fmean(r.components[name] for _, r in scored if name in r.components)
    return summary


def evaluation_specs(task, scenarios: list[dict], samples_per_scenario: int, seed: int) -> list[EpisodeSpec]:
    """The episodes `evaluate` plays, each seeded by its place: the numbers do not depend on `concurrency`
    or batch order, and another script can replay exactly the same episodes."""
    return [EpisodeSpec(task, s, group_id=i, seed=(seed * 1_000_003 + i) * 1_000_003 + k)
            for i, s in enumerate(scenarios) for k in range(samples_per_scenario)]


def evaluate(
    agent,
    task,
    scenarios: list[dict],
    reward_fn,
    *,
    samples_per_scenario: int = 1,
    max_turns: int = 6,
    concurrency: int = 32,
    seed: int = 1234,
    parallel=None,
    user_factory=None,
    **sampling,
) -> dict[str, Any]:
    """Mean reward and success rate of `agent` on `scenarios` (each sampled `samples_per_scenario` times).

    With `parallel` (training/distributed.py) each rank runs a share of the episodes and every rank
    gets the summary of all of them; per-episode seeds make it equal to one process's."""
    from stateset_agents.rewards.batch_rewards import score_trajectories_sync

    specs = evaluation_specs(task, scenarios, samples_per_scenario, seed)
    indices = parallel.share(range(len(specs))) if parallel is not None and parallel.enabled else range(len(specs))
    with isolated_rng(seed):
        trajectories, _ = run_episodes(agent, [specs[i] for i in indices], max_turns=max_turns,
                                       concurrency=concurrency, user_factory=user_factory, **sampling)
    scorable = [t for t in trajectories if t.end_reason != USER_ERROR]  # dropped: the customer failed
    scored = iter(score_trajectories_sync(reward_fn, scorable, error_policy="skip"))
    results = [None if t.end_reason == USER_ERROR else next(scored) for t in trajectories]
    if parallel is not None and parallel.enabled:
        from stateset_agents.training.distributed import gather_in_order

        pairs = gather_in_order(parallel, list(zip(indices, zip(trajectories, results))), len(specs))
        trajectories, results = [t for t, _ in pairs], [r for _, r in pairs]
    return summarize(trajectories, results)
