"""One timed run of TRL's GRPOTrainer in GSPO mode (one process, one model, one setting) -> JSON.

    python benchmarks/bench_trl.py --model-dir DIR --setting '{"name": ...}' --out run.json
    python benchmarks/bench_trl.py --quick --out run.json   # smoke test: bench model tiny, a few tokens

Matched to `bench_ours.py`: the same model directory, LoRA targets (our resolved plan's module
and expert-parameter names, passed as TRL's `peft_config`), prompts in the same order
(`shuffle_dataset=False` over `common.prompt_schedule`), reward, group size, completion length,
sampling (temperature 1, top_p 1, top_k 0), AdamW (lr, betas, no decay, constant schedule),
grad-norm clip, fp32 on CPU, no gradient checkpointing (TRL's default is on; ours is off).
GSPO: `importance_sampling_level="sequence"`, `loss_type="grpo"` (per-sequence mean, then mean
over sequences: the GSPO objective), `epsilon`/`epsilon_high` = the Kimi preset's clip range.
Off-policy: `steps_per_generation` optimizer steps per generation batch with
`gradient_accumulation_steps=1`, so TRL computes π_old with an extra forward pass and clipping
acts after the first step (the same geometry as ours).

One iteration = the `steps_per_generation` optimizer steps that share one generation batch,
timed from the first step's start to the last step's end. The split: generation = TRL's
`_generate` (tokenise + `generate` + decode), scoring = `_calculate_rewards`, update = the rest
(π_old and reference logprob passes, forward/backward, optimizer steps).
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


class _Timer:
    """Accumulates wall time of wrapped methods into named buckets."""

    def __init__(self):
        self.buckets: dict[str, float] = {}

    def wrap(self, obj, name: str, bucket: str) -> None:
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.buckets[bucket] = self.buckets.get(bucket, 0.0) + time.perf_counter() - started

        setattr(obj, name, timed)

    def take(self) -> dict[str, float]:
        out, self.buckets = self.buckets, {}
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", help="required unless --quick (then the bench model `tiny`)")
    parser.add_argument("--setting")
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

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from stateset_agents.models.lora_targets import resolve_lora_targets

    torch.manual_seed(setting.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokenizer.padding_side = "left"
    plan = resolve_lora_targets(model, None, include_experts=True)
    peft_config = plan.build_lora_config(setting.lora_r, setting.lora_alpha, 0.0, task_type="CAUSAL_LM")
    dataset = Dataset.from_list([{"prompt": messages} for messages in common.prompt_schedule(setting)])
    rewards_seen: list[list[float]] = []
    tokens_seen: list[int] = []

    def parity(completions, completion_ids, **kwargs):
        values = [common.parity_reward(ids) for ids in completion_ids]
        rewards_seen.append(values)
        tokens_seen.append(sum(len(ids) for ids in completion_ids))
        return values

    steps = setting.steps_per_rollout
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir, seed=setting.seed, data_seed=setting.seed, use_cpu=True, bf16=False, fp16=False,
            per_device_train_batch_size=setting.episodes_per_step, gradient_accumulation_steps=1,
            steps_per_generation=steps, num_iterations=1, num_generations=setting.group_size,
            max_completion_length=setting.max_new_tokens, temperature=setting.temperature, top_p=setting.top_p,
            top_k=0, learning_rate=setting.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
            adam_beta1=setting.adam_beta1, adam_beta2=setting.adam_beta2, weight_decay=0.0,
            max_grad_norm=setting.max_grad_norm, optim="adamw_torch", beta=setting.beta,
            epsilon=setting.clip_low, epsilon_high=setting.clip_high, importance_sampling_level="sequence",
            loss_type="grpo", scale_rewards="group", max_steps=setting.iterations * steps,
            shuffle_dataset=False, gradient_checkpointing=False, chat_template_kwargs={"thinking": True},
            logging_steps=1, report_to="none", save_strategy="no", dataloader_num_workers=0,
            log_completions=False, disable_tqdm=True,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=parity, args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_config)
        timer = _Timer()
        timer.wrap(trainer, "_generate", "generation")
        timer.wrap(trainer, "_calculate_rewards", "scoring")
        iterations: list[dict] = []
        logs: list[dict] = []

        class Clock(TrainerCallback):
            def on_step_begin(self, args_, state, control, **kwargs):
                if state.global_step % steps == 0:
                    self.began = time.perf_counter()

            def on_step_end(self, args_, state, control, **kwargs):
                if state.global_step % steps == 0:
                    total = time.perf_counter() - self.began
                    split = timer.take()
                    index = len(iterations)
                    iterations.append({
                        "iteration": total, "generation": split.get("generation", 0.0),
                        "scoring": split.get("scoring", 0.0),
                        "update": total - split.get("generation", 0.0) - split.get("scoring", 0.0),
                        "completion_tokens": tokens_seen[index],
                        "reward_mean": sum(rewards_seen[index]) / len(rewards_seen[index]),
                        "optimizer_steps": steps,
                    })

            def on_log(self, args_, state, control, logs_=None, **kwargs):
                if kwargs.get("logs"):
                    logs.append(dict(kwargs["logs"]))

        trainer.add_callback(Clock())
        rss_after_load = common.current_rss_mb()
        setup_seconds = time.perf_counter() - started
        trainer.train()
    clip = [entry.get("clip_ratio/region_mean", 0.0) for entry in logs if "clip_ratio/region_mean" in entry]
    for index, item in enumerate(iterations):
        window = clip[index * steps:(index + 1) * steps]
        item["clip_fraction"] = sum(window) / len(window) if window else float("nan")
    record = {
        "framework": "trl", "setting": setting.name, "iterations": iterations,
        "setup_seconds": setup_seconds, "rss_after_load_mb": rss_after_load, "peak_rss_mb": common.peak_rss_mb(),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
