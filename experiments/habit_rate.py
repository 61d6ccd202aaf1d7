"""How often a policy hands the case on instead of resolving it (the warm start's habit pass), and what it costs.

    python experiments/habit_rate.py --model tiny-kimi-k2.5 [--adapter RUN/checkpoints/iter_000008/adapter] \
        [--task customer_service] [--samples 4] [--seed 10000] [--json OUT.json] [--quick]

Plays every held-out scenario of the task `--samples` times with the demo's sampling and system prompt
(T 1.0, top_p 0.95, 48 new tokens, 5 turns; by default the episodes of the demo's held-out evaluation, so the
totals equal its "before"/"after" numbers), and splits the episodes into those in which the agent said one of
`DeflectingAgent`'s hand-off lines at least once and the rest: how many, their success rate and mean reward.
The experiment of experiments/LOG.md, 2026-12-02 ("the habit").
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def handed_on(trajectory, lines: set[str]) -> bool:
    return any(message.get("role") == "assistant" and (message.get("content") or "").strip() in lines
               for message in trajectory.messages)


def habit_rate(model: str, adapter: str | None, task_name: str, samples: int, seed: int,
               scenario_count: int | None = None, max_new_tokens: int | None = None) -> dict:
    from stateset_agents.demo import demo_config
    from stateset_agents.rewards.batch_rewards import score_trajectories_sync
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.rollout.runner import run_episodes
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.tasks.scripted_agents import DeflectingAgent
    from stateset_agents.training.evaluation import evaluation_specs, is_success, isolated_rng

    config = demo_config("unused", 1, 0, task=task_name)
    agent = Agent(AgentConfig(model_name=model, temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=max_new_tokens or config.max_new_tokens,
                              system_prompt=config.system_prompt)).load()
    if adapter:
        from peft import PeftModel

        agent.model = PeftModel.from_pretrained(agent.model, adapter)
    task = get_task(task_name)
    # the same episodes as the demo's held-out evaluation
    specs = evaluation_specs(task, task.eval_scenarios()[:scenario_count], samples, seed)
    with isolated_rng(seed):
        trajectories, _ = run_episodes(agent, specs, max_turns=config.max_turns, concurrency=32)
    results = score_trajectories_sync(task.default_reward(), trajectories, error_policy="skip")
    lines = set(DeflectingAgent.LINES)
    rows = [(handed_on(t, lines), is_success(t), r.total) for t, r in zip(trajectories, results)]

    def summary(subset: list[tuple[bool, bool, float]]) -> dict:
        return {"episodes": len(subset),
                "success": round(statistics.fmean(s for _, s, _ in subset), 3) if subset else None,
                "reward": round(statistics.fmean(r for _, _, r in subset), 3) if subset else None}

    return {"model": model, "adapter": adapter, "task": task_name, "samples": samples, "seed": seed,
            "handed_on_rate": round(statistics.fmean(h for h, _, _ in rows), 3), "all": summary(rows),
            "handed_on": summary([row for row in rows if row[0]]),
            "resolved_or_tried": summary([row for row in rows if not row[0]])}


def main(argv: list[str] | None = None) -> int:
    from stateset_agents.demo import HELD_OUT_SAMPLES, HELD_OUT_SEED

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--adapter", default=None, help="a PEFT adapter directory (a checkpoint's adapter/)")
    parser.add_argument("--task", default="customer_service")
    parser.add_argument("--samples", type=int, default=HELD_OUT_SAMPLES)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="base model, 2 scenarios, 1 sample, 8 tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.samples = "tiny-kimi-k2.5-base", 1
    result = habit_rate(args.model, args.adapter, args.task, args.samples, args.seed,
                        *((2, 8) if args.quick else (None, None)))
    print(f"handed on in {result['handed_on_rate']:.2f} of {result['all']['episodes']} episodes; "
          f"success {result['all']['success']:.2f}, reward {result['all']['reward']:.3f}")
    for key in ("handed_on", "resolved_or_tried"):
        part = result[key]
        if part["episodes"]:
            print(f"  {key:17s} {part['episodes']:3d} episodes  success {part['success']:.2f}  reward {part['reward']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
