"""Why are held-out episodes not solved: can the model not act, or does it choose the wrong action?

    python experiments/action_choice.py [--model tiny-kimi-k2.5] [--task customer_service] [--samples 2]
                                        [--temperature 1.0] [--out FILE.json] [--quick]
                                        [--system-prompt TEXT] [--partner-note TEXT]

`--system-prompt` replaces the task's prompt and `--partner-note` the text `lookup_order` adds for a partner
seller's order (`""`: none, so a partner's order looks like ShopCo's own): how a model acts when one thing on the
surface changes.

Samples `--samples` episodes on every held-out scenario (the preset's sampling: top_p 0.95) and
reports, per scenario family:
- `opener`: the first assistant turn's text is the family's own opener (the oracle's first words),
  i.e. the model read what the customer asked for;
- `action`: the first call after the information-gathering calls (lookups) - which tool, and
  whether its arguments were exactly the success path's (`exact`);
- `success`.
A model that executes but chooses at random shows many `exact` calls of the wrong tool; one that
cannot execute shows the right tool with wrong arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path


# calls that only read the world: the action is the first call that is not one of these
LOOKUPS = {"customer_service": {"lookup_order"}, "customer_service_claims": {"lookup_order"},
           "customer_service_partner": {"lookup_order"},
           "technical_support": {"run_diagnostic", "check_service_status"}, "sales": {"search_catalog", "get_price"}}


def first_action(trajectory, lookups: set[str]):
    """(tool, arguments) of the first call that is not an information lookup, or None."""
    for message in trajectory.messages:
        for call in message.get("tool_calls") or []:
            name = call["function"]["name"]
            if name not in lookups:
                try:
                    args = json.loads(call["function"]["arguments"])
                except (TypeError, ValueError):
                    args = None
                return name, args
    return None


def main() -> None:
    from stateset_agents.core.messages import message_text
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.evaluation import is_success, isolated_rng

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--task", default="customer_service")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="base model, 3 scenarios, 1 sample, 8 tokens")
    parser.add_argument("--system-prompt", default=None, help="replaces the task's system prompt")
    parser.add_argument("--partner-note", default=None, help="what lookup_order adds for a partner's order")
    args = parser.parse_args()
    if args.partner_note is not None:
        from stateset_agents.tasks import customer_service

        customer_service.PARTNER_NOTE = args.partner_note
    scenario_count, max_new_tokens = (3, 8) if args.quick else (None, 64)
    if args.quick:
        args.model, args.samples = "tiny-kimi-k2.5-base", 1

    task = get_task(args.task).with_system_prompt(args.system_prompt)
    lookups = LOOKUPS.get(task.name, set())
    agent = Agent(AgentConfig(model_name=args.model, temperature=args.temperature, top_p=0.95,
                              max_new_tokens=max_new_tokens))
    scenarios = task.eval_scenarios()[:scenario_count]
    specs = [EpisodeSpec(task, s, group_id=i, seed=args.seed * 1_000_003 + i * 7 + k)
             for i, s in enumerate(scenarios) for k in range(args.samples)]
    with isolated_rng(args.seed):
        trajectories, _ = run_episodes(agent, specs, max_turns=5, concurrency=32)
    rows = defaultdict(lambda: {"episodes": 0, "opener": 0, "success": 0, "exact": 0, "tools": Counter()})
    for spec, trajectory in zip(specs, trajectories):
        scenario = spec.scenario
        row = rows[scenario["family"]]
        row["episodes"] += 1
        solution = task.solution(scenario)
        replies = [m for m in trajectory.messages if m.get("role") == "assistant"]
        row["opener"] += bool(replies) and message_text(replies[0]).strip().startswith(solution["opener"].strip())
        row["success"] += is_success(trajectory)
        wanted = [c for c in solution["calls"] if c["tool"] not in lookups]
        action = first_action(trajectory, lookups)
        row["tools"][action[0] if action else "(none)"] += 1
        if action and wanted and action[0] == wanted[0]["tool"]:
            expected = wanted[0].get("goal_args", wanted[0]["args"])
            row["exact"] += bool(action[1]) and all(_same_argument(action[1].get(k), v) for k, v in expected.items())
    report = {}
    for family, row in sorted(rows.items()):
        n = row["episodes"]
        right_tool = _right_tool(task, family, scenarios, lookups)
        report[family] = {"episodes": n, "opener": row["opener"] / n, "success": row["success"] / n,
                          "right_tool": row["tools"][right_tool] / n if right_tool else None,
                          "right_tool_exact_args": row["exact"] / n, "tools": dict(row["tools"].most_common())}
        print(f"{family:15s} n={n:3d} opener {row['opener'] / n:.2f}  success {row['success'] / n:.2f}  "
              f"action {right_tool or '(reply only)'} {report[family]['right_tool'] if right_tool else float('nan'):.2f} "
              f"(exact args {row['exact'] / n:.2f})  tools {dict(row['tools'].most_common())}")
    overall = {key: statistics.fmean(r[key] for r in report.values()) for key in ("opener", "success")}
    print(f"overall (family mean): opener {overall['opener']:.2f}  success {overall['success']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"command": vars(args) | {"out": str(args.out)}, "families": report,
                                        "overall": overall}, indent=2, default=str))


def _same_argument(value, expected) -> bool:
    """The argument as the success path has it: equal text, or (for amounts) the same number to the cent."""
    if str(value) == str(expected):
        return True
    try:
        return isinstance(expected, float) and abs(float(value) - expected) < 0.005
    except (TypeError, ValueError):
        return False


def _right_tool(task, family: str, scenarios, lookups: set[str]) -> str | None:
    for scenario in scenarios:
        if scenario["family"] == family:
            calls = [c["tool"] for c in task.solution(scenario)["calls"] if c["tool"] not in lookups]
            return calls[0] if calls else None
    return None


if __name__ == "__main__":
    main()
