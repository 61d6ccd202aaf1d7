"""Does GSPO improve the warm-started tiny model? The demo over several seeds, before vs after.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--iterations 12]

Runs `stateset_agents.demo` once per seed (sequentially) and writes
benchmarks/results/demo_seeds.{json,md}: held-out customer_service reward and success rate
before and after training, per seed, with the mean and spread, and each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    from stateset_agents.demo import run_demo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--output-root", default="outputs/demo_seeds")
    args = parser.parse_args()
    runs = {seed: run_demo(f"{args.output_root}/seed{seed}", args.iterations, seed) for seed in args.seeds}
    befores = [r["before (warm start)"]["reward_mean"] for r in runs.values()]
    afters = [r["after (GSPO)"]["reward_mean"] for r in runs.values()]
    gains = [a - b for a, b in zip(afters, befores)]
    spread = lambda values: statistics.pstdev(values) if len(values) > 1 else 0.0  # noqa: E731
    summary = {
        "seeds": args.seeds, "iterations": args.iterations,
        "before_mean": statistics.fmean(befores), "before_std": spread(befores),
        "after_mean": statistics.fmean(afters), "after_std": spread(afters),
        "gain_mean": statistics.fmean(gains), "gain_std": spread(gains),
        "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in runs.values()),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_seeds.json").write_text(json.dumps(summary, indent=2))
    lines = [f"Command: `python benchmarks/demo_seeds.py --seeds {' '.join(map(str, args.seeds))} "
             f"--iterations {args.iterations}`", "",
             "| seed | reward before | reward after | success before | success after | wall (min) |",
             "|---|---|---|---|---|---|"]
    for seed, run in runs.items():
        before, after = run["before (warm start)"], run["after (GSPO)"]
        lines.append(f"| {seed} | {before['reward_mean']:.3f} | {after['reward_mean']:.3f} | "
                     f"{before['success_rate']:.2f} | {after['success_rate']:.2f} | {run['wall_seconds'] / 60:.1f} |")
    lines += ["", f"Mean reward {summary['before_mean']:.3f} ± {summary['before_std']:.3f} -> "
              f"{summary['after_mean']:.3f} ± {summary['after_std']:.3f}; gain {summary['gain_mean']:+.3f} "
              f"± {summary['gain_std']:.3f} (population std over seeds)."]
    (RESULTS / "demo_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
