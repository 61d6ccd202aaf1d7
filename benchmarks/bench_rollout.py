"""Multi-turn rollout throughput of our runner on the customer_service environment -> JSON.

    python benchmarks/bench_rollout.py --out rollout.json [--model tiny-kimi-k2.5-base] [--episodes 32] [--quick]

The same `episodes` customer_service training scenarios (tools declared, rule-based simulated
user, up to `max_turns` assistant turns) are run:

- through `rollout.runner.run_episodes` at each `rollout_concurrency` (1, 4, 16, 32): all live
  conversations sampled in one batched `generate` call per step, finished ones replaced;
- by a plain one-conversation-at-a-time loop (`agent.generate([messages])` per turn), the
  baseline a user would write.

Reported: episodes per second, completion tokens per second, generate calls. Sampling is
stochastic, so episode lengths vary between runs; rates (not totals) are compared. `--quick`: 4
episodes, up to 2 turns of 8 tokens, concurrency 1 and 4 (a smoke test, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def one_at_a_time(agent, task, scenarios, max_turns: int) -> dict:
    """The baseline loop: one conversation, one `generate` call per turn."""
    started = time.perf_counter()
    tokens = calls = 0
    for scenario in scenarios:
        env = task.make_env(scenario, max_turns=max_turns)
        messages = list(env.reset())
        while True:
            turn = agent.generate([messages], tools=task.tools.schemas())[0]
            calls += 1
            tokens += len(turn.completion_ids)
            messages.append(turn.parsed.to_message())
            result = env.step(turn.parsed)
            messages.extend(result.messages)
            if result.done:
                break
    seconds = time.perf_counter() - started
    return {"mode": "loop", "episodes": len(scenarios), "completion_tokens": tokens, "generate_calls": calls,
            "seconds": seconds}


def batched(agent, task, scenarios, max_turns: int, concurrency: int) -> dict:
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes

    specs = [EpisodeSpec(task, scenario, group_id=i) for i, scenario in enumerate(scenarios)]
    _, stats = run_episodes(agent, specs, max_turns=max_turns, concurrency=concurrency)
    return {"mode": f"concurrency={concurrency}", "concurrency": concurrency, "episodes": stats.episodes,
            "completion_tokens": stats.completion_tokens, "generate_calls": stats.generate_calls,
            "seconds": stats.seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="tiny-kimi-k2.5-base")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 episodes, 2 turns x 8 tokens, concurrency 1,4")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.max_turns, args.max_new_tokens, args.concurrency = 4, 2, 8, "1,4"

    import torch

    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.tasks.registry import get_task

    agent = Agent(AgentConfig(model_name=args.model, max_new_tokens=args.max_new_tokens, temperature=1.0,
                              model_kwargs={"chat_template_kwargs": {"thinking": True}, "device": "cpu",
                                            "dtype": "float32"})).load()
    task = get_task("customer_service")
    scenarios = task.train_scenarios()[: args.episodes]
    torch.manual_seed(args.seed)
    batched(agent, task, scenarios[:4], args.max_turns, 4)  # warm-up (allocator, lazy imports)
    runs = []
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        torch.manual_seed(args.seed)
        runs.append(batched(agent, task, scenarios, args.max_turns, concurrency))
    torch.manual_seed(args.seed)
    runs.append(one_at_a_time(agent, task, scenarios, args.max_turns))
    for run in runs:
        run["episodes_per_second"] = run["episodes"] / run["seconds"]
        run["tokens_per_second"] = run["completion_tokens"] / run["seconds"]
    record = {"model": args.model, "episodes": len(scenarios), "max_turns": args.max_turns,
              "max_new_tokens": args.max_new_tokens, "runs": runs, "peak_rss_mb": common.peak_rss_mb()}
    Path(args.out).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
