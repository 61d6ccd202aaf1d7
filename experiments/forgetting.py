"""Forgetting: train task A, then task B, with continual_strategy "none" and "replay_lwf".

By default A = customer_service (ShopCo) and B = customer_service_claims (a marketplace desk with the same
customers, orders and tools and a conflicting policy: refund and return requests go to the claims team),
the built-in sequence `continual_two_stores` (the config's `task`; `--tasks` picks another pair, e.g.
`continual_two_sellers`, where B is ShopCo's own prompt on partner sellers' orders).

    flock /tmp/stateset-cpu.lock .venv/bin/python experiments/forgetting.py --seeds 0 1 2 --threads 2

Settings: `--config` (default `experiments/configs/forgetting_replay_lwf.yaml`, which
`stateset-agents train --config` runs as one arm; `forgetting_none.yaml` is the other): the
warm-started tiny Kimi-K2.5 (`tiny-kimi-k2.5`), LoRA, the demo's CPU settings (4 scenarios x 8
generations per iteration, 4 optimizer steps per rollout, lr 2e-3), the guide's continual settings
(replay_buffer_size=2000, replay_ratio=0.5) with the LwF KL on the replayed episodes as KL(teacher || policy)
at kl_penalty_beta=0.5 (`lwf_rows: replayed`, `lwf_divergence: forward`), and `task_iterations` 8 on A then 16 on
B. The script sets the task pair, the seed, the strategy, and the iterations on A (`--iterations-per-task`) and on
B (`--iterations-on-b`); each defaults to the config's `task_iterations` (else 6 on A and as many on B). The
learning rate is constant after warmup, so a longer B trains at the same rate.

Measured on each task's held-out scenarios: A and B before training, at the boundary and at the end;
A's RL gain (A after A - A before), the share of it left after B ((A after B - A before) / gain), and B's
gain (B after B - B after A), for reward and for success rate. Held-out reward is the mean reward of each task's own reward function on its eval scenarios
(never trained on), `--eval-samples` episodes each, sampled with a fixed evaluation seed, so every
model is scored on the same scenarios with the same sampler seed. Three numbers per run:
A after A (at the task boundary), A after B and B after B (at the end); forgetting = A after A -
A after B. B after A (the boundary model on B) is reported too, as B's starting point.

Same seeds, same budget: for one seed both strategies share the task-A phase. Until the first
task boundary replay_lwf only *stores* episodes (its buffer has its own RNG; there is no earlier
task to replay and no teacher), so its A phase is bit-identical to none's. The script trains A
once with replay_lwf, checkpoints at the boundary, and continues B twice from that checkpoint:
in process with replay_lwf, and in a fresh trainer (continual_strategy="none", resumed from a copy
of the checkpoint, which restores weights, optimizer, schedule, RNG and scenario samplers).
Both B phases use the same number of iterations and fresh episodes; replay_lwf additionally
trains on the replayed episodes (its update batch is twice as large at replay_ratio=0.5).

Outputs: results JSON, a PNG (bars = mean over seeds, error bars = sample std, dots = seeds), and
a markdown table, under `--output` (default experiments/results/forgetting[_quick]_<model>_<commit>.*);
each run's metrics.jsonl, learning curves (task boundary marked) and report.md under `--runs-dir`
(default outputs/forgetting). `--quick`: the base model, one seed, 1 iteration per task of 2 x 2
short episodes, 2 held-out scenarios (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "experiments" / "configs" / "forgetting_replay_lwf.yaml"
sys.path.insert(0, str(REPO / "benchmarks"))
STRATEGIES = ("none", "replay_lwf")
MEASURES = ("A before", "A after A", "A after B", "B after B")
METRICS = ("reward_mean", "success_rate")
QUICK = dict(model_name="tiny-kimi-k2.5-base", scenarios_per_iteration=1, num_generations=2,
             per_device_train_batch_size=2, max_new_tokens=8, max_turns=2, rollout_concurrency=2, lr_warmup_steps=0)
BASE_CONFIG = None  # the TrainingConfig loaded from --config (main sets it)


def make_config(strategy: str, seed: int, output_dir: Path, tasks: list[str], iterations_per_task: int,
                iterations_on_b: int):
    return BASE_CONFIG.replace(task=",".join(tasks), output_dir=str(output_dir), seed=seed,
                               num_outer_iterations=iterations_per_task + iterations_on_b,
                               task_iterations=[iterations_per_task, iterations_on_b], continual_strategy=strategy)


EVAL_SCENARIOS: int | None = None  # None = all of a task's eval scenarios (--eval-scenarios)


def held_out(trainer, task_index: int, samples: int, seed: int) -> dict:
    from stateset_agents.training.evaluation import evaluate

    task = trainer.tasks[task_index]
    summary = evaluate(trainer.agent, task, task.eval_scenarios()[:EVAL_SCENARIOS], task.default_reward(),
                       samples_per_scenario=samples, max_turns=trainer.config.max_turns,
                       concurrency=trainer.config.rollout_concurrency, seed=seed)
    return {"reward_mean": summary["reward_mean"], "success_rate": summary["success_rate"],
            "episodes": summary["episodes"],
            "components": {key.removeprefix("component/"): value for key, value in summary.items()
                           if key.startswith("component/")}}


def train_iterations(trainer, start: int, stop: int) -> None:
    """train() without the end-of-run report: metrics.jsonl, the boundary event and the task field."""
    from stateset_agents.runs.metrics import MetricsLogger

    config = trainer.config
    with MetricsLogger(trainer.output_dir, report_to=config.report_to, total_iterations=config.num_outer_iterations) \
            as logger:
        for iteration in range(start, stop):
            if iteration > 0 and trainer.task_index(iteration) != trainer.task_index(iteration - 1):
                logger.log_event(f"task boundary: {trainer.tasks[trainer.task_index(iteration - 1)].name} -> "
                                 f"{trainer.tasks[trainer.task_index(iteration)].name}")
            metrics = trainer.iteration(iteration)
            trainer.history.append(metrics)
            logger.log(metrics)
            trainer.iteration_index = iteration + 1
            print(f"  [{config.continual_strategy} seed {config.seed}] iteration {iteration + 1}/{stop} "
                  f"{metrics['task']}: reward {metrics['reward/mean']:.3f}  "
                  f"kl_teacher {metrics.get('continual/kl_teacher', float('nan')):.4f}  "
                  f"replay {metrics.get('continual/replay_fraction', 0.0):.2f}  ({metrics['time/iteration']:.0f}s)",
                  flush=True)


def run_seed(seed: int, tasks: list[str], iterations_per_task: int, iterations_on_b: int, samples: int,
             root: Path, eval_every_b: int | None) -> dict:
    from stateset_agents.runs.report import write_report
    from stateset_agents.training.trainer import GSPOTrainer

    eval_seed = 20_000 + seed
    shared = root / f"seed{seed}" / "replay_lwf"
    shutil.rmtree(root / f"seed{seed}", ignore_errors=True)
    shared_trainer = GSPOTrainer(make_config("replay_lwf", seed, shared, tasks, iterations_per_task, iterations_on_b),
                                 log=lambda _: None)
    shared_trainer.config.save(shared)
    before = {"A before": held_out(shared_trainer, 0, samples, eval_seed),
              "B before": held_out(shared_trainer, 1, samples, eval_seed)}
    train_iterations(shared_trainer, 0, iterations_per_task)
    boundary = {**before, "A after A": held_out(shared_trainer, 0, samples, eval_seed),
                "B after A": held_out(shared_trainer, 1, samples, eval_seed)}
    checkpoint = shared_trainer.save_checkpoint()
    baseline_dir = root / f"seed{seed}" / "none"
    (baseline_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, baseline_dir / "checkpoints" / checkpoint.name)
    shutil.copy(shared / "metrics.jsonl", baseline_dir / "metrics.jsonl")  # the shared task-A phase

    results, curves = {}, {}
    for strategy in ("replay_lwf", "none"):  # replay_lwf first: it continues with the RNG state it has
        if strategy == "none":
            config = make_config("none", seed, baseline_dir, tasks, iterations_per_task, iterations_on_b).replace(
                resume=True)
            trainer = GSPOTrainer(config, log=lambda _: None)
            config.save(baseline_dir)
            trainer._resume()
        else:
            trainer = shared_trainer
        curves[strategy] = train_b(trainer, iterations_per_task, iterations_on_b, eval_every_b,
                                   lambda task_index: held_out(trainer, task_index, samples, eval_seed))
        results[strategy] = {**boundary, "A after B": held_out(trainer, 0, samples, eval_seed),
                             "B after B": held_out(trainer, 1, samples, eval_seed)}
        write_report(trainer.output_dir, title=f"{tasks[0]} -> {tasks[1]}, continual_strategy={strategy}, "
                                               f"seed {seed}")
        print(f"seed {seed} {strategy}: " + ", ".join(f"{k} {v['reward_mean']:.3f}"
                                                      for k, v in results[strategy].items()), flush=True)
    if eval_every_b:
        results["curves"] = curves
    return results


def train_b(trainer, start: int, iterations_on_b: int, every: int | None, evaluate) -> list[dict]:
    """B's iterations; with `every`, A and B held out after every `every` of them (the last point is the run's
    "after B", measured by the caller). Evaluation keeps training's RNGs as they were, so the run trains as
    without these points."""
    curve, done = [], 0
    while done < iterations_on_b:
        step = min(every or iterations_on_b, iterations_on_b - done)
        train_iterations(trainer, start + done, start + done + step)
        done += step
        if done < iterations_on_b:
            curve.append({"b_iterations": done, "A": evaluate(0), "B": evaluate(1)})
    return curve


DERIVED = {  # what the issue asks: how much of A's RL gain survives B, and how far B gets
    "forgetting (A after A - A after B)": lambda r: r["A after A"] - r["A after B"],
    "A gain (A after A - A before)": lambda r: r["A after A"] - r["A before"],
    "A gain kept (A after B - A before) / A gain": lambda r: (r["A after B"] - r["A before"]) / (
        r["A after A"] - r["A before"]) if r["A after A"] != r["A before"] else float("nan"),
    "B gain (B after B - B after A)": lambda r: r["B after B"] - r["B after A"],
}


def summarize(runs: dict[int | str, dict], metric: str = "reward_mean") -> dict:
    """Per strategy and measure: mean, sample std and the per-seed values of `metric`; the derived rows."""
    summary = {}
    for strategy in STRATEGIES:
        rows = {}
        per_run = [{measure: value[metric] for measure, value in r[strategy].items()} for r in runs.values()]
        for measure in (*MEASURES, "B before", "B after A", *DERIVED):
            values = [DERIVED[measure](r) if measure in DERIVED else r[measure] for r in per_run]
            rows[measure] = {"mean": statistics.fmean(values),
                             "std": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}
        summary[strategy] = rows
    return summary


def reward_weights(reward) -> dict[str, float]:
    """Each component's share of the reward (MultiObjectiveReward is the weighted *mean* of its components)."""
    total = sum(reward.weights.values())
    return {name: weight / total for name, weight in reward.weights.items()}


def component_breakdown(runs: dict[int | str, dict], weights: dict[str, float]) -> dict[str, dict[str, float]]:
    """Task A's reward gain and what each arm keeps of it after B, split by reward component: weight x change in
    the component's held-out mean, averaged over the seeds whose results carry components. The rows sum to the
    reward rows, so they show which parts of A's gain B's training takes away (a success is one component)."""
    with_components = [run for run in runs.values()
                       if all("components" in run[strategy][measure] for strategy in STRATEGIES for measure in MEASURES)]
    if not with_components:
        return {}

    def change(run, strategy, measure, name):
        return weights[name] * (run[strategy][measure]["components"].get(name, 0.0)
                                - run[strategy]["A before"]["components"].get(name, 0.0))

    return {name: {"A gain": statistics.fmean(change(run, "none", "A after A", name) for run in with_components),
                   **{f"kept after B: {strategy}": statistics.fmean(change(run, strategy, "A after B", name)
                                                                     for run in with_components)
                      for strategy in STRATEGIES}}
            for name in weights}


def curve_points(run: dict, strategy: str, on_b: int) -> list[tuple[int, dict, dict]]:
    """(B iterations, A held out, B held out) at every evaluated point of B's phase, the end included."""
    points = [(point["b_iterations"], point["A"], point["B"]) for point in run["curves"][strategy]]
    return points + [(on_b, run[strategy]["A after B"], run[strategy]["B after B"])]


def _curve_value(run: dict, strategy: str, on_b: int, index: int, kind: str, metric: str) -> float:
    """At the index-th point of B's phase: the share of A's gain kept ("kept") or B's gain ("gain")."""
    _, a_now, b_now = curve_points(run, strategy, on_b)[index]
    measures = {measure: value[metric] for measure, value in run[strategy].items()}
    if kind == "gain":
        return b_now[metric] - measures["B after A"]
    gain = measures["A after A"] - measures["A before"]
    return (a_now[metric] - measures["A before"]) / gain if gain else float("nan")


def curve_table(runs: dict[int | str, dict], on_b: int) -> list[str]:
    """Markdown rows: per B length and arm, the share of A's gain kept and B's gain, for reward and success
    (mean over the seeds that recorded curves, then each seed). Empty when no run recorded a curve."""
    with_curves = {seed: run for seed, run in runs.items() if "curves" in run}
    if not with_curves:
        return []

    def lengths_of(run: dict) -> list[int]:
        return [length for length, _, _ in curve_points(run, "none", on_b)]

    lengths = lengths_of(next(iter(with_curves.values())))  # merged runs may have evaluated other points
    with_curves = {seed: run for seed, run in with_curves.items() if lengths_of(run) == lengths}
    lines = ["", f"**Along B's phase** (seeds {', '.join(map(str, with_curves))}): A's gain kept = (A now - A before) / "
             "(A after A - A before); B's gain = B now - B after A", "",
             "| B iterations | arm | A's gain kept: reward | A's gain kept: success | B's gain: reward | "
             "B's gain: success |", "|---|---|---|---|---|---|"]
    for index, length in enumerate(lengths):
        for strategy in STRATEGIES:
            cells = []
            for kind, form in (("kept", "{:.0%}"), ("gain", "{:+.3f}")):
                for metric in METRICS:
                    values = [_curve_value(run, strategy, on_b, index, kind, metric) for run in with_curves.values()]
                    cells.append(form.format(statistics.fmean(values)) + " (" + ", ".join(form.format(v) for v in values)
                                 + ")")
            lines.append(f"| {length} | {strategy} | " + " | ".join(cells) + " |")
    return lines


def markdown(summaries: dict[str, dict], runs: dict[int | str, dict], command: str, meta: dict,
             breakdown: dict[str, dict[str, float]] | None = None) -> str:
    seeds = sorted(runs)
    on_b = meta.get("iterations_on_b", meta["iterations_per_task"])
    phases = (f"{meta['iterations_per_task']} iterations each" if on_b == meta["iterations_per_task"]
              else f"{meta['iterations_per_task']} iterations on A, {on_b} on B")
    lines = [f"Tasks: A = {meta['tasks'][0]}, B = {meta['tasks'][1]}; {phases}; seeds {', '.join(map(str, seeds))}"
             f"{' (N#2: a second run of seed N)' if any('#' in str(seed) for seed in seeds) else ''}; "
             f"held-out: {meta['eval_episodes']} episodes per task and model "
             f"({meta['eval_samples']} per eval scenario). Mean ± sample std over seeds, then each seed."]
    for metric, summary in summaries.items():
        measures = list(next(iter(summary.values())))
        lines += ["", f"**{metric}**", "", "| measure | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
        for measure in measures:
            cells = [f"{rows[measure]['mean']:.3f} ± {rows[measure]['std']:.3f} "
                     f"({', '.join(f'{v:.3f}' for v in rows[measure]['per_seed'])})" for rows in summary.values()]
            lines.append(f"| {measure} | " + " | ".join(cells) + " |")
    if breakdown:
        columns = list(next(iter(breakdown.values())))
        lines += ["", "**A's reward gain by component** (weight x change in the held-out mean from A before; mean over "
                  "the seeds that recorded components)", "", "| component | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(f"{row[column]:+.3f}" for column in columns) + " |"
                  for name, row in breakdown.items()]
    lines += curve_table(runs, on_b)
    lines += ["", f"Command: `{command}`", f"Wall time: {meta['wall_minutes']:.1f} min on {meta['machine']}."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.2))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    width = 0.38
    for offset, (strategy, color) in enumerate(zip(STRATEGIES, ("#9e9e9e", "#1f77b4"))):
        rows = summary[strategy]
        xs = [i + (offset - 0.5) * width for i in range(len(MEASURES))]
        ax.bar(xs, [rows[m]["mean"] for m in MEASURES], width, yerr=[rows[m]["std"] for m in MEASURES],
               color=color, alpha=0.8, capsize=4, label=strategy)
        for x, measure in zip(xs, MEASURES):
            values = rows[measure]["per_seed"]
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(MEASURES)), MEASURES)
    ax.set_ylabel("held-out reward (mean)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_results(prefix: Path, runs: dict[int | str, dict], meta: dict, command: str) -> str:
    """PREFIX.json, PREFIX.png and PREFIX.md from per-seed results; returns the markdown."""
    summaries = {metric: summarize(runs, metric) for metric in METRICS}
    prefix.parent.mkdir(parents=True, exist_ok=True)

    def path(extension: str) -> Path:  # not with_suffix: a prefix like "..._tiny-kimi-k2.5_<commit>" has a dot
        return prefix.parent / (prefix.name + extension)

    path(".json").write_text(json.dumps({"command": command, **meta, "summary": summaries,
                                         "runs": {str(k): v for k, v in runs.items()}}, indent=2))
    plot(summaries["reward_mean"], path(".png"),
         f"Forgetting: {meta['tasks'][0]} (A) then {meta['tasks'][1]} (B), seeds {sorted(runs)}")
    breakdown = component_breakdown(runs, meta["reward_weights"]) if "reward_weights" in meta else {}
    table = markdown(summaries, {seed: runs[seed] for seed in sorted(runs)}, command.strip(), meta, breakdown)
    path(".md").write_text(table)
    return table


def recorded_command(argv) -> str:
    """The command line written into the results (as run; the arguments of `main(argv)` or of the process)."""
    return "python experiments/forgetting.py " + " ".join(sys.argv[1:] if argv is None else argv)


def merge_results(paths: list[Path], prefix: Path, argv) -> int:
    """One set of tables from several results JSON (same tasks and settings, distinct seeds)."""
    loaded = [json.loads(path.read_text()) for path in paths]
    keys = ("tasks", "iterations_per_task", "iterations_on_b", "eval_samples", "eval_episodes", "continual")
    for item in loaded:  # results written before --iterations-on-b trained B as long as A; before lwf_divergence,
        item.setdefault("iterations_on_b", item["iterations_per_task"])  # the LwF KL was the reverse one
        item["continual"].setdefault("lwf_divergence", "reverse")
    if any({key: item[key] for key in keys} != {key: loaded[0][key] for key in keys} for item in loaded):
        raise SystemExit(f"--merge: the results differ in one of {', '.join(keys)}")
    configs = {json.dumps(item["config"], sort_keys=True) for item in loaded if "config" in item}
    if len(configs) > 1:  # e.g. another max_new_tokens (results written before the config was recorded pass)
        raise SystemExit("--merge: the results were trained with different configs")
    runs: dict[str, dict] = {}
    for item in loaded:  # a seed run twice (another machine, another commit) is kept as a run of its own
        for seed, run in item["runs"].items():
            label = seed if seed not in runs else f"{seed}#{sum(key.split('#')[0] == seed for key in runs) + 1}"
            runs[label] = run
    meta = {**{key: loaded[0][key] for key in keys}, "machine": loaded[0]["machine"],
            "wall_minutes": sum(item["wall_minutes"] for item in loaded),
            "merged": [item["command"] for item in loaded]}
    if "reward_weights" in loaded[0]:
        meta["reward_weights"] = loaded[0]["reward_weights"]
    print(write_results(prefix, runs, meta, recorded_command(argv)))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", default=None, help=(
        "A,B, or a built-in sequence of two (tasks.registry.TASK_SEQUENCES); default: the config's task"))
    parser.add_argument("--iterations-per-task", type=int, default=None, help=(
        "outer iterations on A (default: the config's task_iterations, else 6)"))
    parser.add_argument("--iterations-on-b", type=int, default=None, help=(
        "outer iterations on B (default: the config's task_iterations, else --iterations-per-task)"))
    parser.add_argument("--eval-every-b", type=int, default=None, help=(
        "also hold out A and B after every N iterations of B in both arms (a curve along B's phase; each point "
        "costs two evaluations per arm)"))
    parser.add_argument("--eval-samples", type=int, default=1, help="episodes per held-out scenario")
    parser.add_argument("--eval-scenarios", type=int, default=None, help="first N eval scenarios (default: all)")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch threads. 1 by default, safe when other jobs share a 2-core machine (two OpenMP threads then "
        "spin-wait on each other); on an otherwise idle 2-core machine 2 threads ran ~2x faster (25 s vs 50 s "
        "per iteration), which the committed results used"))
    parser.add_argument("--config", type=Path, default=CONFIG, help="TrainingConfig of the replay_lwf arm")
    parser.add_argument("--output", default=None, help=(
        "prefix of the committed results: PREFIX.json, PREFIX.png, PREFIX.md "
        "(default experiments/results/forgetting[_quick]_<model>_<commit>)"))
    parser.add_argument("--quick", action="store_true", help="base model, seed 0, 1 short iteration per task")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON", help=(
        "no training: combine the results JSON of earlier runs (e.g. one per seed) into one set of tables at --output"))
    parser.add_argument("--runs-dir", default=str(REPO / "outputs" / "forgetting"),
                        help="training runs (metrics.jsonl, plots, checkpoints); not committed")
    args = parser.parse_args(argv)
    import torch
    from common import result_stem

    from stateset_agents.training.config import TrainingConfig

    global BASE_CONFIG
    BASE_CONFIG = TrainingConfig.from_file(args.config)
    if args.quick:
        BASE_CONFIG = BASE_CONFIG.replace(**QUICK)
        args.seeds, args.iterations_per_task, args.eval_scenarios = [0], 1, 2
        args.iterations_on_b = 1 if args.iterations_on_b is None else args.iterations_on_b
    if args.output is None:
        args.output = str(REPO / "experiments" / "results" / result_stem("forgetting", BASE_CONFIG.model_name,
                                                                         args.quick))

    torch.set_num_threads(args.threads)
    global EVAL_SCENARIOS
    EVAL_SCENARIOS = args.eval_scenarios
    from stateset_agents.embedded import EMBEDDED_MODELS, ensure_embedded_model

    if args.merge:
        return merge_results(args.merge, Path(args.output), argv)
    tasks = BASE_CONFIG.replace(task=args.tasks or BASE_CONFIG.task, task_iterations=None).task_sequence
    if len(tasks) != 2:
        parser.error("--tasks takes exactly two tasks: A,B")
    configured = BASE_CONFIG.task_iterations or [6, None]  # each flag defaults to the config's count
    if args.iterations_per_task is None:
        args.iterations_per_task = configured[0]
    on_b = next(count for count in (args.iterations_on_b, configured[1], args.iterations_per_task) if count is not None)
    if min(args.iterations_per_task, on_b) < 1:
        parser.error("--iterations-per-task and --iterations-on-b must be at least 1")
    if args.eval_every_b is not None and args.eval_every_b < 1:
        parser.error("--eval-every-b must be at least 1")
    if BASE_CONFIG.model_name in EMBEDDED_MODELS:  # else a model directory, e.g. a candidate warm start
        ensure_embedded_model(BASE_CONFIG.model_name)
    prefix = Path(args.output)
    root = Path(args.runs_dir)
    started = time.perf_counter()
    runs = {seed: run_seed(seed, tasks, args.iterations_per_task, on_b, args.eval_samples, root, args.eval_every_b)
            for seed in args.seeds}
    from stateset_agents.tasks.registry import get_task

    meta = {"tasks": tasks, "iterations_per_task": args.iterations_per_task, "iterations_on_b": on_b,
            "eval_samples": args.eval_samples,
            "eval_episodes": len(get_task(tasks[0]).eval_scenarios()[:args.eval_scenarios]) * args.eval_samples,
            "continual": {key: getattr(BASE_CONFIG, key) for key in
                          ("replay_buffer_size", "replay_ratio", "kl_penalty_beta", "lwf_rows", "lwf_divergence",
                           "kl_beta")},
            "wall_minutes": (time.perf_counter() - started) / 60,
            "machine": f"{os.cpu_count()} CPU cores, {args.threads} torch thread(s)",
            "reward_weights": reward_weights(get_task(tasks[0]).default_reward()),
            "config": BASE_CONFIG.model_dump(mode="json", exclude={"output_dir", "seed", "continual_strategy"})}
    table = write_results(prefix, runs, meta, recorded_command(argv))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
