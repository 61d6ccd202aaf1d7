"""Held-out reward and success of a model at several sampling temperatures (is a failure sampling noise?).

    python experiments/temperature_probe.py [--model tiny-kimi-k2.5] [--task customer_service] [--temperatures 1.0,0.5,0]
                                         [--out FILE.json] [--quick]

One episode per held-out scenario at each temperature (0 = greedy; top_p 0.95 otherwise, the preset's),
5 turns of at most 64 new tokens, the same evaluation seed (10000) as the demo's seed-0 evaluation.
If success rises a lot as the temperature falls, the model can act but its sampling is noisy (which RL
sharpens); if it stays low even greedy, the model cannot (yet) do the task.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.evaluation import evaluate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--task", default="customer_service")
    parser.add_argument("--temperatures", default="1.0,0.5,0")
    parser.add_argument("--out", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="base model, 2 scenarios, 8 tokens (a smoke test)")
    args = parser.parse_args()
    scenarios, max_new_tokens = (2, 8) if args.quick else (None, 64)
    if args.quick:
        args.model = "tiny-kimi-k2.5-base"
    task = get_task(args.task)
    results = []
    for temperature in (float(t) for t in args.temperatures.split(",")):
        greedy = temperature == 0
        agent = Agent(AgentConfig(model_name=args.model, temperature=1e-6 if greedy else temperature,
                                  top_p=1.0 if greedy else 0.95, max_new_tokens=max_new_tokens))
        started = time.perf_counter()
        result = evaluate(agent, task, task.eval_scenarios()[:scenarios], task.default_reward(), samples_per_scenario=1,
                          max_turns=5, concurrency=32, seed=10_000)
        results.append({"temperature": temperature, "reward": round(result["reward_mean"], 3),
                        "success": round(result["success_rate"], 3), "seconds": round(time.perf_counter() - started)})
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"model": args.model, "task": args.task, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
