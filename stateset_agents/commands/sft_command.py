"""`stateset-agents sft`: supervised fine-tuning on helpdesk transcripts, the warm start before RL.

    stateset-agents sft --model tiny-kimi-k2.5-base --data examples/data/customer_service_transcripts.jsonl \
        --output-dir outputs/sft_cs
    stateset-agents sft --model M --data transcripts.jsonl --output-dir outputs/sft --resume   # continue
    stateset-agents train --model outputs/sft_cs/model --task customer_service --use-lora       # then RL

`--data`: JSONL, one conversation per line, OpenAI-style messages with tool calls (and optional
`reasoning_content`), plus optional `tools` schemas (docs/sft.md). Every line is checked before the model
loads; problems are printed one per line with the line and field. Loss is on the assistant turns only,
exactly the tokens the model would sample for them in its own chat format (Kimi-K2.5's, or the
tokenizer's chat template). LoRA by default (`--no-lora`: every weight), checkpoints every
`--save-steps` steps; the output's `model/` (adapter folded in) is what `--model` of `train` loads.
"""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["add_sft_arguments", "sft_from_args", "settings_from_args"]


def add_sft_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="model to fine-tune: embedded (tiny-kimi-k2.5-base), local directory, or hub id")
    parser.add_argument("--data", required=True, help="transcripts JSONL file")
    parser.add_argument("--output-dir", default=None, help="where checkpoints, model/ and adapter/ go "
                                                           "(default: outputs/sft_<data file name>)")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument("--use-lora", dest="use_lora", action="store_true", default=True,
                      help="train LoRA adapters (the default)")
    lora.add_argument("--no-lora", dest="use_lora", action="store_false", help="full fine-tuning")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha (default 32)")
    parser.add_argument("--lora-target-modules", default=None,
                        help="comma-separated names, Llama-style or the model's own (default: every attention "
                             "and MLP projection, translated to the model as RL does)")
    parser.add_argument("--no-lora-experts", dest="lora_target_experts", action="store_false",
                        help="leave routed MoE experts out of LoRA (on Kimi-K2.5 they are most of its size)")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the turns (default 1)")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=8, help="assistant turns per step and device (default 8)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=None, help="default 2e-4 with LoRA, 2e-5 without")
    parser.add_argument("--max-length", type=int, default=8192,
                        help="turns longer than this (prompt + target tokens) are skipped (default 8192)")
    parser.add_argument("--no-thinking", dest="thinking", action="store_false",
                        help="Kimi non-thinking mode (prompts end in <think></think>; reasoning is not trained)")
    parser.add_argument("--save-steps", type=int, default=100, help="checkpoint every N steps (default 100)")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last "
                                                               "checkpoint (same flags)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the model")


def settings_from_args(args: argparse.Namespace):
    from pathlib import Path

    from stateset_agents.training.sft import SFTSettings

    targets = [name.strip() for name in args.lora_target_modules.split(",") if name.strip()] \
        if args.lora_target_modules else None
    return SFTSettings(
        model=args.model, data=args.data, output_dir=args.output_dir or f"outputs/sft_{Path(args.data).stem}",
        use_lora=args.use_lora, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_target_modules=targets,
        lora_target_experts=args.lora_target_experts, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate, max_length=args.max_length, thinking=args.thinking,
        save_steps=args.save_steps, logging_steps=args.logging_steps, seed=args.seed, dtype=args.dtype,
        device=args.device, gradient_checkpointing=args.gradient_checkpointing,
        trust_remote_code=args.trust_remote_code, report_to=["wandb"] if args.wandb else [], resume=args.resume)


def rl_task(task: str | None, data_path) -> str:
    """The --task for RL: the transcripts' task when it is a built-in; else the file domain the
    transcripts sit in (a directory with domain.yaml); else the named task, or customer_service."""
    from pathlib import Path

    from stateset_agents.tasks.registry import list_tasks

    if task in list_tasks():
        return task
    folder = Path(data_path).resolve().parent
    if (folder / "domain.yaml").is_file():
        return str(Path(data_path).parent) or "."
    return task or "customer_service"


def next_commands(model_dir, task: str | None) -> list[str]:
    """The commands that start RL from the fine-tuned model on `task` (see `rl_task`)."""
    model, task = shlex.quote(str(model_dir)), shlex.quote(task or "customer_service")
    return [f"stateset-agents train --model {model} --task {task} --use-lora",
            f"python examples/finetune_kimi25_gspo.py --model {model} --task {task} --use-lora"]


def sft_from_args(args: argparse.Namespace) -> int:
    from stateset_agents.cli import fail
    from stateset_agents.models.lora_targets import LoraTargetError
    from stateset_agents.models.loading import ModelNotAvailableError, UnsupportedSettingError
    from stateset_agents.training.sft import SFTRunError, run_sft
    from stateset_agents.training.sft_data import TemplateError, TranscriptError

    try:
        settings = settings_from_args(args)
        result = run_sft(settings)
    except TranscriptError as error:  # one line per problem, each with its line and field
        for problem in str(error).splitlines():
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except (SFTRunError, TemplateError, LoraTargetError, ModelNotAvailableError, UnsupportedSettingError) as error:
        return fail(str(error))
    losses = result.losses
    trend = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
    print(f"Done: {result.global_step} steps, {trend}. Model: {result.model_dir}"
          + (f"  Adapter: {result.adapter_dir}" if result.adapter_dir else ""))
    print("Start RL from it:")
    for command in next_commands(result.model_dir, rl_task(result.task, args.data)):
        print(f"  {command}")
    if not settings.thinking:
        print("  (trained without thinking: give the RL run thinking: false, e.g. in a --config file)")
    return 0
