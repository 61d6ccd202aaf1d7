"""Where does a model's held-out reward go? Components, unbacked claims and tool calls per scenario family.

    python experiments/reward_breakdown.py [--model tiny-kimi-k2.5] [--task sales] [--samples 2] [--top-p 0.95]
                                           [--out FILE.json] [--quick]

Samples `--samples` episodes on every held-out scenario of the task (as `warm_start_quality.py` does,
same seed) and prints, per scenario family: mean reward, mean of each reward component, unbacked
claims, user strikes and policy violations per episode, then the count of tool calls by (family,
tool, succeeded); `--out` also writes both as JSON. `--quick`: the base model, 2 scenarios, 1 sample,
8 tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path


def main() -> None:
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.rewards.components import unbacked_claims
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.evaluation import isolated_rng

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--task", default="sales")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--out", type=Path, help="also write the breakdown as JSON")
    parser.add_argument("--quick", action="store_true", help="base model, 2 scenarios, 1 sample, 8 tokens")
    args = parser.parse_args()
    scenarios, max_new_tokens = (2, 8) if args.quick else (None, 64)
    if args.quick:
        args.model, args.samples = "tiny-kimi-k2.5-base", 1

    agent = Agent(AgentConfig(model_name=args.model, max_new_tokens=max_new_tokens, top_p=args.top_p,
                              model_kwargs={"device": "cpu"}))
    task = get_task(args.task)
    reward = task.default_reward()
    specs = [EpisodeSpec(task, s, i) for i, s in enumerate(task.eval_scenarios()[:scenarios])
             for _ in range(args.samples)]
    with isolated_rng(args.seed):
        trajectories, _ = run_episodes(agent, specs, max_turns=5, concurrency=64)
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    calls: Counter = Counter()
    for trajectory in trajectories:
        family = trajectory.scenario.get("family", "-")
        result = reward.score(trajectory)
        row = values[family]
        row["reward"].append(result.total)
        for name, value in result.components.items():
            row[name].append(value)
        row["unbacked claims"].append(len(unbacked_claims(trajectory.messages)))
        row["user strikes"].append(trajectory.state.get("user_strikes", 0))
        row["policy violations"].append(len(trajectory.state.get("policy_violations", [])))
        for action in trajectory.state.get("actions", []):
            calls[(family, action["tool"], bool(action["ok"]))] += 1
    for family, row in values.items():
        means = ", ".join(f"{name} {statistics.fmean(v):.2f}" for name, v in row.items())
        print(f"{family} ({len(row['reward'])} episodes): {means}")
    for (family, tool, ok), count in sorted(calls.items()):
        print(f"  {family:16s} {tool:20s} {'ok' if ok else 'failed':6s} {count}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "model": args.model, "task": args.task, "samples": args.samples,
            "families": {family: {name: statistics.fmean(v) for name, v in row.items()} | {"episodes": len(row["reward"])}
                         for family, row in values.items()},
            "tool_calls": [{"family": f, "tool": t, "ok": ok, "count": c} for (f, t, ok), c in sorted(calls.items())],
        }, indent=2))


if __name__ == "__main__":
    main()
