"""Does GSPO improve the warm-started tiny model? The demo's training run over several seeds, before vs after.

    python experiments/demo_seeds.py [--config experiments/configs/demo_seeds.yaml] [--seeds 0 1 2]
                                     [--iterations N] [--results DIR] [--quick]

Trains the run of `--config` (default: the demo's settings, `experiments/configs/demo_seeds.yaml`,
which `stateset-agents train --config` runs too) once per seed, sequentially, evaluating the held-out
split of the config's (first) task, customer_service in the demo, before and after as the demo does, and writes
`--results`/demo_seeds[_quick]_<model>_<commit>.{json,md} (default experiments/results): held-out reward
and success rate before and after training, per seed, with the mean and spread, each run's wall time,
and where an iteration's time goes (rollout / reward / update, from each run's metrics.jsonl).
`--summarize-only` rebuilds the tables from finished runs under `--output-root`. `--quick`: the base
model, one seed, one iteration of 2 x 2 short episodes, 2 held-out scenarios (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"
CONFIG = REPO / "experiments" / "configs" / "demo_seeds.yaml"
sys.path.insert(0, str(REPO / "benchmarks"))

QUICK = dict(model_name="tiny-kimi-k2.5-base", scenarios_per_iteration=1, num_generations=2,
             per_device_train_batch_size=2, max_new_tokens=8, max_turns=2, rollout_concurrency=2, lr_warmup_steps=0,
             save_every=0)


def run_seed(config, scenarios: int | None = None) -> dict:
    """The demo's run (`stateset_agents.demo.run_demo`) for one config: held-out before, train, held-out after."""
    from stateset_agents.demo import held_out
    from stateset_agents.training.trainer import GSPOTrainer

    started = time.perf_counter()
    shutil.rmtree(config.output_dir, ignore_errors=True)
    trainer = GSPOTrainer(config)
    before = held_out(trainer, scenarios=scenarios)
    result = trainer.train()
    after = held_out(trainer, scenarios=scenarios)
    summary = {"before (warm start)": before, "after (GSPO)": after, "wall_seconds": time.perf_counter() - started}
    (Path(result.output_dir) / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def time_split(run_dir: Path) -> dict[str, float]:
    """Median seconds per training iteration of each part, from the run's metrics.jsonl."""
    from stateset_agents.runs.report import TIME_PARTS

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "time/iteration" in r]
    return {key: statistics.median(r[key] for r in records) for key in (*TIME_PARTS, "time/iteration")}


def main() -> None:
    from common import result_stem

    from stateset_agents.training.config import TrainingConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG, help="the TrainingConfig of one seed's run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=None, help="default: the config's num_outer_iterations")
    parser.add_argument("--output-root", default="outputs/demo_seeds")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the json and markdown go")
    parser.add_argument("--summarize-only", action="store_true", help="tables from finished runs, no training")
    parser.add_argument("--quick", action="store_true", help="base model, seed 0, 1 short iteration, 2 scenarios")
    args = parser.parse_args()
    config = TrainingConfig.from_file(args.config)
    scenarios = None
    if args.quick:
        config, args.seeds, args.iterations, scenarios = config.replace(**QUICK), [0], 1, 2
    args.iterations = args.iterations or config.num_outer_iterations
    root = Path(args.output_root)
    if args.summarize_only:
        runs = {seed: json.loads((root / f"seed{seed}" / "demo_summary.json").read_text()) for seed in args.seeds}
    else:
        runs = {seed: run_seed(config.replace(seed=seed, num_outer_iterations=args.iterations,
                                              output_dir=str(root / f"seed{seed}")), scenarios=scenarios)
                for seed in args.seeds}
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
    # the config's first task names the files unless it is the demo's (experiments/configs/demo_sales.yaml)
    experiment = "demo_seeds" if config.task == "customer_service" else f"demo_seeds_{config.task_sequence[0]}"
    stem = result_stem(experiment, config.model_name, args.quick)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [f"Command: `python experiments/demo_seeds.py --config {args.config} --seeds {' '.join(map(str, args.seeds))} "
             f"--iterations {args.iterations}{' --quick' if args.quick else ''}`", "",
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
    (args.results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
