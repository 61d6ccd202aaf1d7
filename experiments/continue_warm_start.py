"""Try another warm-start stage on top of an existing warm-started model, then screen it by family.

    python experiments/continue_warm_start.py --out /tmp/exp/NAME [--model tiny-kimi-k2.5] \
        [--tasks customer_service] [--dialogues 1000] [--mix '{"oracle": 0.8, "mediocre": 0.2}'] \
        [--epochs 1] [--lr 2e-3] [--seed 1] [--screen-only] [--screen-tasks customer_service,sales]

Stage settings apply to a fresh set of scenarios and dialogues (`--seed`, disjoint ids from the shipped
splits). The screen samples every held-out scenario of `--screen-tasks` `--samples` times at the
preset's sampling (T 1.0, top_p 0.95), 48 new tokens and 5 turns (the demo's), and prints reward and
success per family; results go to OUT/screen.json. The experiments of 2026-12-01 in experiments/LOG.md. Appending a stage to the warm start this way is
exactly what a full rebuild with that stage would compute (each stage has its own optimizer and
seeded shuffle), so a winner can be adopted without rebuilding to compare.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def screen(model_dir: str, task_name: str, samples: int, seed: int = 10_000, max_new_tokens: int = 48,
           per_family: int | None = None) -> dict:
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.evaluation import evaluate

    task = get_task(task_name)
    agent = Agent(AgentConfig(model_name=model_dir, temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens))
    scenarios = task.eval_scenarios()
    results = {}
    for family in sorted({s["family"] for s in scenarios}):
        chosen = [s for s in scenarios if s["family"] == family][:per_family]
        result = evaluate(agent, task, chosen, task.default_reward(), samples_per_scenario=samples, max_turns=5,
                          concurrency=32, seed=seed)
        results[family] = {"reward": round(result["reward_mean"], 3), "success": round(result["success_rate"], 3),
                           "episodes": result["episodes"]}
    episodes = sum(r["episodes"] for r in results.values())
    results["all"] = {key: round(sum(r[key] * r["episodes"] for r in results.values()) / episodes, 3)
                      for key in ("reward", "success")}
    for family, row in results.items():
        print(f"{task_name:16s} {family:16s} reward {row['reward']:.3f}  success {row['success']:.2f}", flush=True)
    return results


def continue_stage(model_dir: str, out: Path, tasks: list[str], dialogues: int, mix: dict, epochs: int,
                   lr: float, seed: int, batch_rows: int) -> dict:
    from stateset_agents.core.formats import get_chat_format
    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.rollout.encoding import PromptEncoder
    from stateset_agents.tasks.episodes import generate_reference_dialogues
    from stateset_agents.tasks.generate_data import fresh_scenarios
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.warm_start import (WarmStartSettings, dialogue_examples, pinned_threads,
                                                     supervised_epochs)

    import partner_rehearsal  # noqa: F401  (registers the rehearsal-only partner tasks; experiments/ is on the path)

    loaded = load_model(model_dir, LoadSettings(device="cpu", dtype="float32"))
    encoder = PromptEncoder(loaded.tokenizer, get_chat_format(loaded.tokenizer), loaded.image_settings)
    pairs = []
    for offset, name in enumerate(tasks):
        task = get_task(name)
        scenarios = fresh_scenarios(task, dialogues, seed)
        pairs += [(task, dialogue) for dialogue in generate_reference_dialogues(task, dialogues, seed + offset, mix,
                                                                                 scenarios=scenarios)]
    examples = dialogue_examples(pairs, encoder)
    prompt_tokens = sum(len(p.input_ids) for p, _ in examples)
    print(f"{len(examples)} turns, {prompt_tokens / len(examples):.0f} prompt tokens per turn, "
          f"{sum(len(c) for _, c in examples) / len(examples):.0f} target tokens per turn", flush=True)
    settings = replace(WarmStartSettings(), epochs=epochs, learning_rate=lr, seed=seed, batch_rows=batch_rows)
    started = time.perf_counter()
    with pinned_threads():
        losses = supervised_epochs(loaded.model, examples, loaded.tokenizer, settings, label="stage")
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    from stateset_agents.models.vision import ImageProcessorSettings

    ImageProcessorSettings.load(Path(loaded.path)).save(out)
    return {"losses": losses, "seconds": round(time.perf_counter() - started), "turns": len(examples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--tasks", default="customer_service")
    parser.add_argument("--dialogues", type=int, default=1000, help="per task")
    parser.add_argument("--mix", default='{"oracle": 0.8, "mediocre": 0.2}')
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-rows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--screen-only", action="store_true", help="screen --model as it is")
    parser.add_argument("--screen-tasks", default="customer_service", help="tasks to screen, comma-separated")
    parser.add_argument("--quick", action="store_true", help="base model, 2 dialogues, 1 scenario per family, 8 tokens")
    args = parser.parse_args()
    quick = dict(max_new_tokens=8, per_family=1) if args.quick else {}
    if args.quick:
        args.model, args.dialogues, args.samples = "tiny-kimi-k2.5-base", 2, 1
    report = {"args": {k: str(v) for k, v in vars(args).items()}}
    model_dir = args.model
    if not args.screen_only:
        report["stage"] = continue_stage(args.model, args.out, args.tasks.split(","), args.dialogues,
                                         json.loads(args.mix), args.epochs, args.lr, args.seed, args.batch_rows)
        print(json.dumps(report["stage"]), flush=True)
        model_dir = str(args.out)
    report["screen"] = {name: screen(model_dir, name, args.samples, **quick) for name in args.screen_tasks.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "screen.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
