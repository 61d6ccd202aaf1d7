"""`make demo`: warm-started tiny Kimi-K2.5 -> GSPO on customer_service -> held-out before/after report.

    python -m stateset_agents.demo [--iterations 8] [--seed 0] [--output-dir outputs/demo]

The Kimi-K2.5 preset (`get_kimi25_config`) scaled down to finish in minutes on two CPU cores:
same algorithm (GSPO), group size and sampling; fewer scenarios per iteration, shorter turns, a
learning rate suited to a 2M-parameter model, LoRA rank 16, a 10x wider clip range and a KL to the
warm start (below).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# 8 iterations x ~31 s on two CPU cores: the training stays under 6 minutes; with the install and the two
# 120-episode held-out evaluations a fresh machine's `make demo` took 540 s (experiments/LOG.md, stop 26)
DEMO_ITERATIONS = 8
DEMO_OVERRIDES = dict(
    scenarios_per_iteration=4,      # x group size 8 = 32 episodes per iteration
    per_device_train_batch_size=8,
    gradient_accumulation_steps=1,  # -> 4 optimizer steps per rollout batch
    learning_rate=2e-3,
    lr_warmup_steps=4,
    # GSPO clips the sequence ratio, the geometric mean of the token ratios over a ~130-token episode: one
    # deciding token's log-prob moving by d moves it by d/130. At the preset's 1.5e-4 / 2.5e-4 the clip stopped
    # the warm start's hand-off habit from being unlearned (48% -> 35% of episodes in 8 iterations); at 10x,
    # 48% -> 7% (experiments/LOG.md, 2026-12-02)
    clip_epsilon_low=1.5e-3,
    clip_epsilon_high=2.5e-3,
    # A k3 KL to the warm start (LoRA off): without it a run that unlearns the hand-off habit can drift into
    # failing tool calls and garbled text instead of resolving the case (seed 0: success 0.38 -> 0.39); with it
    # the three seeds gained +0.19 / +0.19 / +0.24 success (experiments/LOG.md, 2026-12-02 "KL")
    kl_beta=0.1,
    lora_r=16,
    lora_alpha=32,
    max_new_tokens=48,
    max_turns=5,
    rollout_concurrency=32,
    eval_every=0,
    save_every=4,
    device="cpu",
)


def demo_config(output_dir: str, iterations: int, seed: int, task: str = "customer_service"):
    from stateset_agents.training.kimi25_config import get_kimi25_config

    return get_kimi25_config(model_name="tiny-kimi-k2.5", task=task, use_lora=True, output_dir=output_dir,
                             num_outer_iterations=iterations, seed=seed, **DEMO_OVERRIDES)


def replace_earlier_demo(config) -> None:
    """Delete an earlier demo run in config.output_dir (a new demo starts from the warm start); a
    directory holding any other run is left alone, and the trainer then refuses it."""
    from stateset_agents.training.run_dir import saved_run_config

    saved = saved_run_config(config.output_dir)
    free = {"seed", "num_outer_iterations", "resume"}
    if saved is not None and saved.model_dump(exclude=free) == config.model_dump(exclude=free):
        print(f"Replacing the earlier demo run in {config.output_dir}")
        shutil.rmtree(config.output_dir)


# The held-out evaluation: every eval scenario (30) played HELD_OUT_SAMPLES times with the sampler seeded from
# HELD_OUT_SEED, the same episodes before and after training and for every training seed, so runs differ only in
# what they trained. 120 episodes: the standard error of a success rate near 0.5 is about 0.045 (60: 0.065).
HELD_OUT_SAMPLES = 4
HELD_OUT_SEED = 10_000


def held_out(trainer, scenarios: int | None = None) -> dict:
    """The trainer's policy on its first task's held-out episodes (the first `scenarios` eval scenarios)."""
    from stateset_agents.training.evaluation import evaluate

    task = trainer.tasks[0]
    return evaluate(trainer.agent, task, task.eval_scenarios()[:scenarios], task.default_reward(),
                    samples_per_scenario=HELD_OUT_SAMPLES, max_turns=trainer.config.max_turns,
                    concurrency=trainer.config.rollout_concurrency, seed=HELD_OUT_SEED)


def run_demo(output_dir: str, iterations: int, seed: int) -> dict:
    from stateset_agents.embedded import ensure_embedded_model
    from stateset_agents.runs.report import write_report
    from stateset_agents.training.trainer import GSPOTrainer

    started = time.perf_counter()
    ensure_embedded_model("tiny-kimi-k2.5")
    config = demo_config(output_dir, iterations, seed)
    replace_earlier_demo(config)
    trainer = GSPOTrainer(config)
    print("Evaluating the warm-started model on held-out scenarios ...")
    before = held_out(trainer)
    result = trainer.train()
    print("Evaluating the fine-tuned model on the same held-out scenarios ...")
    after = held_out(trainer)
    summary = {"before (warm start)": before, "after (GSPO)": after}
    seconds = time.perf_counter() - started
    (result.output_dir / "demo_summary.json").write_text(json.dumps({**summary, "wall_seconds": seconds}, indent=2))
    report = write_report(result.output_dir, title="GSPO demo: tiny-kimi-k2.5 on customer_service", summary=summary)
    print(f"\nHeld-out reward: {before['reward_mean']:.3f} -> {after['reward_mean']:.3f}   "
          f"success: {before['success_rate']:.2f} -> {after['success_rate']:.2f}   ({seconds / 60:.1f} min)")
    print(f"Report: {report}\nPlots:  {result.output_dir / 'plots'}\nMetrics: {result.output_dir / 'metrics.jsonl'}")
    return {**summary, "wall_seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=DEMO_ITERATIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/demo")
    args = parser.parse_args(argv)
    run_demo(args.output_dir, args.iterations, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
