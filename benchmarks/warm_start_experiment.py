"""Try a tiny-model spec and warm-start settings without touching the cached embedded models.

    python benchmarks/warm_start_experiment.py --out /tmp/exp/NAME \
        [--spec '{"num_attention_heads": 8}'] [--settings '{"dialogues_per_task": 2000}'] [--scenarios 20]

Builds the base model with `TinyKimiSpec(**spec)` into OUT/base and warm-starts it with
`WarmStartSettings(**settings)` into OUT/out (each skipped when already there), then samples one
episode on each of the first `--scenarios` held-out scenarios of every task, at top_p 0.95 (the
preset's sampling) and 1.0, and prints the well-formed share and mean reward. A quick screen
(about 300 turns per setting); confirm a winner with `warm_start_quality.py` and
`warm_start_token_loss.py --model OUT/out`. The numbers in the stop-8 closing note of issue 3
were measured with this script's predecessor (same steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def screen(model_dir: Path, scenarios: int, top_p: float) -> None:
    import torch

    from stateset_agents.core.agent import Agent, AgentConfig
    from stateset_agents.rewards.scoring import score_trajectories_sync
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
    from stateset_agents.tasks.registry import get_task, list_tasks

    agent = Agent(AgentConfig(model_name=str(model_dir), max_new_tokens=64, top_p=top_p,
                              model_kwargs={"device": "cpu"}))
    for name in list_tasks():
        task = get_task(name)
        torch.manual_seed(0)
        specs = [EpisodeSpec(task, s, i) for i, s in enumerate(task.eval_scenarios()[:scenarios])]
        trajectories, _ = run_episodes(agent, specs, max_turns=5, concurrency=64)
        turns = [turn for trajectory in trajectories for turn in trajectory.turns]
        rewards = [result.total for result in score_trajectories_sync(task.default_reward(), trajectories)]
        print(f"top_p {top_p}  {name:18s} well-formed {statistics.fmean(t.parsed.well_formed for t in turns):.1%}  "
              f"reward {statistics.fmean(rewards):.3f}  ({len(turns)} turns)", flush=True)


def main() -> None:
    from stateset_agents.models.tiny_kimi import TinyKimiSpec, build_tiny_kimi
    from stateset_agents.training.warm_start import WarmStartSettings, build_warm_started

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--spec", default="{}", help="TinyKimiSpec overrides, JSON")
    parser.add_argument("--settings", default="{}", help="WarmStartSettings overrides, JSON")
    parser.add_argument("--scenarios", type=int, default=20, help="held-out scenarios per task")
    args = parser.parse_args()
    base, warm = args.out / "base", args.out / "out"
    if not base.exists():
        build_tiny_kimi(base, TinyKimiSpec(**json.loads(args.spec)))
    if not warm.exists():
        started = time.perf_counter()
        build_warm_started(base, warm, WarmStartSettings(**json.loads(args.settings)))
        print(f"warm start: {time.perf_counter() - started:.0f} s", flush=True)
    for top_p in (0.95, 1.0):
        screen(warm, args.scenarios, top_p)


if __name__ == "__main__":
    main()
