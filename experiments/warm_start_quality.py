"""How good is the warm-started tiny model? Parse rate and held-out reward next to scripted agents.

    python experiments/warm_start_quality.py [--model tiny-kimi-k2.5] [--samples 2] [--top-p 0.95] [--results DIR]
                                             [--quick]

For every task: the scripted oracle and unhelpful agents' mean reward on the held-out split,
and the model's mean reward and fraction of well-formed turns (think block closed, turn ended
with <|im_end|>, no parse errors), sampled the way the trainer samples (the Kimi preset:
temperature 1.0 with thinking, top_p 0.95). Writes `--results`/warm_start_quality[_quick]_<model>_<commit>.{json,md}
(default experiments/results). `--quick`: the base model, 2 held-out scenarios per task, 1 sample, 8 tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))


def scripted_mean(task, agent_name: str, scenarios: int | None = None) -> float:
    from stateset_agents.tasks.episodes import run_scripted_episode
    from stateset_agents.tasks.scripted_agents import make_agent

    reward = task.default_reward()
    scores = [reward.score(run_scripted_episode(task, s, make_agent(agent_name), seed=i)).total
              for i, s in enumerate(task.eval_scenarios()[:scenarios])]
    return statistics.fmean(scores)


def model_quality(agent, task, samples: int, seed: int, scenarios: int | None = None) -> dict:
    """Reward summary and well-formed share of `samples` episodes on each of the first `scenarios` eval scenarios."""
    from stateset_agents.rewards.batch_rewards import score_trajectories_sync
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
    from stateset_agents.training.evaluation import isolated_rng, summarize

    specs = [EpisodeSpec(task, s, i) for i, s in enumerate(task.eval_scenarios()[:scenarios]) for _ in range(samples)]
    with isolated_rng(seed):
        trajectories, stats = run_episodes(agent, specs, max_turns=5, concurrency=64)
    turns = [turn for trajectory in trajectories for turn in trajectory.turns]
    summary = summarize(trajectories, score_trajectories_sync(task.default_reward(), trajectories))
    summary["well_formed_turns"] = statistics.fmean(turn.parsed.well_formed for turn in turns)
    summary["turns"] = len(turns)
    summary["completion_tokens"] = stats.completion_tokens
    return summary


def main() -> None:
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.tasks.registry import get_task, list_tasks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--samples", type=int, default=2, help="episodes per held-out scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (the Kimi preset's 0.95)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the json and markdown go")
    parser.add_argument("--quick", action="store_true", help="base model, 2 scenarios per task, 1 sample, 8 tokens")
    args = parser.parse_args()
    from common import result_stem

    scenarios, max_new_tokens = (2, 8) if args.quick else (None, 64)
    if args.quick:
        args.model, args.samples = "tiny-kimi-k2.5-base", 1
    stem = result_stem("warm_start_quality", args.model, args.quick)
    started = time.perf_counter()
    agent = Agent(AgentConfig(model_name=args.model, max_new_tokens=max_new_tokens, top_p=args.top_p,
                              model_kwargs={"device": "cpu"}))
    build_info = Path(agent.loaded.path) / "build_info.json"
    build_seconds = json.loads(build_info.read_text()).get("build_seconds") if build_info.exists() else None
    rows = {}
    for name in list_tasks():
        task = get_task(name)
        quality = model_quality(agent, task, args.samples, args.seed, scenarios)
        rows[name] = {"oracle": scripted_mean(task, "oracle", scenarios),
                      "unhelpful": scripted_mean(task, "unhelpful", scenarios),
                      "model": quality}
    args.results.mkdir(parents=True, exist_ok=True)
    summary = {"top_p": args.top_p, "build_seconds": build_seconds, "tasks": rows}
    (args.results / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = ["| task | unhelpful | warm-started model | oracle | model success | well-formed turns |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        model = row["model"]
        lines.append(f"| {name} | {row['unhelpful']:.3f} | {model['reward_mean']:.3f} | {row['oracle']:.3f} | "
                     f"{model['success_rate']:.2f} | {model['well_formed_turns']:.1%} ({model['turns']} turns) |")
    table = "\n".join(lines)
    (args.results / f"{stem}.md").write_text(
        f"Command: `python experiments/warm_start_quality.py {'--quick ' if args.quick else ''}--model {args.model} --samples {args.samples} "
        f"--top-p {args.top_p}`\n\n{table}\n\nMeasured in {time.perf_counter() - started:.0f} s"
        + (f"; building the model took {build_seconds:.0f} s (build_info.json)" if build_seconds else "") + ".\n")
    print(table)


if __name__ == "__main__":
    main()
