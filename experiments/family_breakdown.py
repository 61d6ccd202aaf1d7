"""Per-family success and reward from a `stateset-agents eval --json` report: where a policy (or RL) gains.

    python experiments/family_breakdown.py EVAL.json [EVAL2.json ...] [--markdown OUT.md]

Each report's episodes are grouped by their scenario's family (`Task.eval_scenarios()` / `train` split, as the
report's settings say); with `--against` in the report both policies are shown side by side. Several reports
(e.g. one per training seed, the same scenarios and seed) are pooled, each row saying how many episodes it has.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def family_rows(reports: list[dict]) -> list[dict]:
    """One row per (task, family, policy): episodes, success rate and mean reward, pooled over `reports`."""
    from stateset_agents.tasks.registry import get_task

    pooled: dict[tuple[str, str, str], list[tuple[float, bool]]] = defaultdict(list)
    for report in reports:
        split = report["settings"]["split"]
        for task_name, result in report["tasks"].items():
            family_of = {s["id"]: s["family"] for s in get_task(task_name).scenarios(split)}
            for episode in result["episodes"]:
                for policy in report["policies"]:
                    outcome = episode.get(policy)
                    if outcome and outcome.get("scored"):
                        key = (task_name, family_of[episode["scenario_id"]], policy)
                        pooled[key].append((outcome["reward"], bool(outcome["success"])))
    return [{"task": task, "family": family, "policy": policy, "episodes": len(values),
             "success": sum(s for _, s in values) / len(values), "reward": sum(r for r, _ in values) / len(values)}
            for (task, family, policy), values in sorted(pooled.items())]


def markdown(rows: list[dict], sources: list[str]) -> str:
    lines = [f"Per-family held-out results pooled over {', '.join(sources)}", "",
             "| task | family | policy | episodes | success | reward |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['family']} | {r['policy']} | {r['episodes']} | {r['success']:.2f} | {r['reward']:.3f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="JSON written by `stateset-agents eval --json`")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    table = markdown(family_rows([json.loads(path.read_text()) for path in args.reports]),
                     [path.name for path in args.reports])
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
