"""One timed run of our GSPOTrainer (one process, one model, one setting) -> a JSON record.

    python benchmarks/bench_ours.py --model-dir DIR --setting '{"name": ...}' --out run.json
    python benchmarks/bench_ours.py --quick --out run.json   # smoke test: bench model tiny, a few tokens

One iteration = one rollout batch (prompts_per_iteration x group_size single-turn episodes, one
batched generate call) + reward + `steps_per_rollout` optimizer steps. The split comes from the
trainer's own metrics: generation = time/rollout, scoring = time/reward, update = time/update
(reference logprobs when beta > 0, and the optimizer steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def build_trainer(model_dir: str, setting: common.Setting, output_dir: str, bench_task):
    """Our trainer configured with the matched settings, fed the benchmark's prompt schedule."""
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.trainer import GSPOTrainer

    task_name = bench_task.register(common.prompt_schedule(setting))
    config = TrainingConfig(
        model_name=model_dir, task=task_name, output_dir=output_dir, seed=setting.seed,
        use_lora=True, lora_r=setting.lora_r, lora_alpha=setting.lora_alpha, lora_dropout=0.0,
        num_generations=setting.group_size, scenarios_per_iteration=setting.prompts_per_iteration,
        per_device_train_batch_size=setting.episodes_per_step, gradient_accumulation_steps=1,
        num_outer_iterations=setting.iterations, learning_rate=setting.learning_rate,
        adam_beta1=setting.adam_beta1, adam_beta2=setting.adam_beta2, max_grad_norm=setting.max_grad_norm,
        loss_type="gspo", clip_epsilon_low=setting.clip_low, clip_epsilon_high=setting.clip_high,
        kl_beta=setting.beta, max_turns=1, max_new_tokens=setting.max_new_tokens,
        temperature=setting.temperature, top_p=setting.top_p, top_k=0, thinking=True,
        rollout_concurrency=setting.prompts_per_iteration * setting.group_size,
        eval_every=0, save_every=0, report_to=["jsonl"], device="cpu", dtype="float32",
    )
    trainer = GSPOTrainer(config, log=lambda message: None)
    trainer.samplers = [bench_task.ScheduledSampler(trainer.tasks[0].train_scenarios())]
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", help="required unless --quick (then the bench model `tiny`)")
    parser.add_argument("--setting", help="Setting as JSON (common.setting_to_json)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true",
                        help="defaults for a smoke test: bench model tiny, common.smoke(gspo_beta0)")
    args = parser.parse_args(argv)
    if args.quick:
        args.model_dir = args.model_dir or str(common.ensure_model("tiny"))
        args.setting = args.setting or common.setting_to_json(common.smoke(common.SETTINGS["gspo_beta0"]))
    if not args.model_dir or not args.setting:
        parser.error("--model-dir and --setting are required without --quick")
    setting = common.setting_from_json(args.setting)
    started = time.perf_counter()

    import bench_task

    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(args.model_dir, setting, output_dir, bench_task)
        rss_after_load = common.current_rss_mb()
        setup_seconds = time.perf_counter() - started
        iterations = []
        for index in range(setting.iterations):
            metrics = trainer.iteration(index)
            iterations.append({
                "iteration": metrics["time/iteration"], "generation": metrics["time/rollout"],
                "scoring": metrics["time/reward"], "update": metrics["time/update"],
                "completion_tokens": metrics["tokens/completion"], "reward_mean": metrics["reward/mean"],
                "optimizer_steps": metrics["optimizer_steps"],
                "clip_fraction": metrics.get("clip/low_fraction", 0.0) + metrics.get("clip/high_fraction", 0.0),
            })
    record = {
        "framework": "ours", "setting": setting.name, "iterations": iterations,
        "setup_seconds": setup_seconds, "rss_after_load_mb": rss_after_load, "peak_rss_mb": common.peak_rss_mb(),
        "trainable_parameters": sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad),
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
