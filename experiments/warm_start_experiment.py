"""Try a tiny-model spec and warm-start settings without touching the cached embedded models.

    python experiments/warm_start_experiment.py --out /tmp/exp/NAME \
        [--spec '{"num_attention_heads": 8}'] [--settings '{"dialogues_per_task": 2000}'] [--scenarios 20] [--quick]

Builds the base model with `TinyKimiSpec(**spec)` into OUT/base and warm-starts it with
`WarmStartSettings(**settings)` into OUT/out (each skipped when already there), then samples one
episode on each of the first `--scenarios` held-out scenarios of every task, at top_p 0.95 (the
preset's sampling) and 1.0, and prints the well-formed share and mean reward (also written to
OUT/screen.json). A quick screen (about 300 turns per setting); confirm a winner with
`warm_start_quality.py` and `warm_start_token_loss.py --model OUT/out`. `--quick` (a smoke test of
the pipeline, not a model worth screening): 2 dialogues per task, 32 copy drills, 1 scenario, 8 tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def screen(model_dir: Path, scenarios: int, top_p: float, max_new_tokens: int = 64) -> dict:
    from warm_start_quality import model_quality

    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.tasks.registry import get_task, list_tasks

    agent = Agent(AgentConfig(model_name=str(model_dir), max_new_tokens=max_new_tokens, top_p=top_p,
                              model_kwargs={"device": "cpu"}))
    results = {}
    for name in list_tasks():
        quality = model_quality(agent, get_task(name), samples=1, seed=0, scenarios=scenarios)
        print(f"top_p {top_p}  {name:18s} well-formed {quality['well_formed_turns']:.1%}  "
              f"reward {quality['reward_mean']:.3f}  ({quality['turns']} turns)", flush=True)
        results[name] = {key: quality[key] for key in ("well_formed_turns", "reward_mean", "turns")}
    return results


def main() -> None:
    from stateset_agents.embedded import build_base
    from stateset_agents.models.tiny_kimi import TinyKimiSpec
    from stateset_agents.training.warm_start import WarmStartSettings, build_warm_started

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--spec", default="{}", help="TinyKimiSpec overrides, JSON")
    parser.add_argument("--settings", default="{}", help="WarmStartSettings overrides, JSON")
    parser.add_argument("--scenarios", type=int, default=20, help="held-out scenarios per task")
    parser.add_argument("--quick", action="store_true", help="2 dialogues per task, 32 drills, 1 scenario, 8 tokens")
    args = parser.parse_args()
    settings = json.loads(args.settings)
    max_new_tokens = 64
    if args.quick:
        settings = {"dialogues_per_task": 2, "copy_drills": 32, **settings}
        args.scenarios, max_new_tokens = 1, 8
    base, warm = args.out / "base", args.out / "out"
    if not base.exists():
        build_base(base, TinyKimiSpec(**json.loads(args.spec)))
    if not warm.exists():
        started = time.perf_counter()
        build_warm_started(base, warm, WarmStartSettings(**settings))
        print(f"warm start: {time.perf_counter() - started:.0f} s", flush=True)
    screened = {str(top_p): screen(warm, args.scenarios, top_p, max_new_tokens) for top_p in (0.95, 1.0)}
    (args.out / "screen.json").write_text(json.dumps({"spec": json.loads(args.spec), "settings": settings,
                                                      "scenarios": args.scenarios, "screen": screened}, indent=2))


if __name__ == "__main__":
    main()
