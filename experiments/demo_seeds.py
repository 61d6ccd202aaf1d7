"""Does GSPO improve the warm-started tiny model? The demo over several seeds, before vs after.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--iterations 12]

Runs `stateset_agents.demo` once per seed (sequentially) and writes
benchmarks/results/demo_seeds.{json,md}: held-out customer_service reward and success rate
before and after training, per seed, with the mean and spread, each run's wall time, and where an
iteration's time goes (rollout / reward / update, from each run's metrics.jsonl).
`--summarize-only` rebuilds the tables from finished runs under `--output-root`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
def time_split(run_dir: Path) -> dict[str, float]:
    """Median seconds per training iteration of each part, from the run's metrics.jsonl."""
    from stateset_agents.training.report import TIME_PARTS

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "time/iteration" in r]
    return {key: statistics.median(r[key] for r in records) for key in (*TIME_PARTS, "time/iteration")}


def main() -> None:
    from stateset_agents.demo import run_demo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--output-root", default="outputs/demo_seeds")
    parser.add_argument("--summarize-only", action="store_true", help="tables from finished runs, no training")
    args = parser.parse_args()
    root = Path(args.output_root)
    if args.summarize_only:
        runs = {seed: json.loads((root / f"seed{seed}" / "demo_summary.json").read_text()) for seed in args.seeds}
    else:
        runs = {seed: run_demo(str(root / f"seed{seed}"), args.iterations, seed) for seed in args.seeds}
    for seed, run in runs.items():
        run["time_split"] = time_split(root / f"seed{seed}")
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
             "| seed | reward before | reward after | success before | success after | wall (min) | "
             "iteration s: rollout / reward / update / total (median) |",
             "|---|---|---|---|---|---|---|"]
    for seed, run in runs.items():
        before, after, split = run["before (warm start)"], run["after (GSPO)"], run["time_split"]
        lines.append(f"| {seed} | {before['reward_mean']:.3f} | {after['reward_mean']:.3f} | "
                     f"{before['success_rate']:.2f} | {after['success_rate']:.2f} | {run['wall_seconds'] / 60:.1f} | "
                     + " / ".join(f"{seconds:.1f}" for seconds in split.values()) + " |")
    lines += ["", f"Mean reward {summary['before_mean']:.3f} ± {summary['before_std']:.3f} -> "
              f"{summary['after_mean']:.3f} ± {summary['after_std']:.3f}; gain {summary['gain_mean']:+.3f} "
              f"± {summary['gain_std']:.3f} (population std over seeds).", "",
              "Reward components, mean over seeds, before -> after:"]
    first = next(iter(runs.values()))["before (warm start)"]
    for key in sorted(k for k in first if k.startswith("component/")):
        values = [statistics.fmean(r[phase][key] for r in runs.values())
                  for phase in ("before (warm start)", "after (GSPO)")]
        lines.append(f"- {key.removeprefix('component/')}: {values[0]:.3f} -> {values[1]:.3f}")
    (RESULTS / "demo_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
