"""`stateset-agents` command line: train from flags or a config file, build the tiny model, evaluate.

    stateset-agents train --model tiny-kimi-k2.5 --task customer_service --use-lora
    stateset-agents train --config outputs/run/config.yaml --resume
    stateset-agents build-tiny-model
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The guide's flags (plus --iterations, --resume, --config)."""
    parser.add_argument("--model", default="tiny-kimi-k2.5",
                        help="model name: embedded (tiny-kimi-k2.5), local directory, or hub id (moonshotai/Kimi-K2.5)")
    parser.add_argument("--task", default="customer_service",
                        help="customer_service, technical_support, sales, or a comma-separated sequence")
    parser.add_argument("--use-lora", action="store_true", help="train LoRA adapters (recommended)")
    parser.add_argument("--use-4bit", action="store_true", help="load the base model 4-bit with bitsandbytes (QLoRA; CUDA only)")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    parser.add_argument("--wandb-project", default=None, help="W&B project name")
    parser.add_argument("--output-dir", default=None, help="where config, metrics, checkpoints and the report go")
    parser.add_argument("--iterations", type=int, default=None, help="outer iterations (num_outer_iterations)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    parser.add_argument("--config", default=None, help="a TrainingConfig YAML/JSON file; flags given override it")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the checkpoint")
    parser.add_argument("--seed", type=int, default=None)


def config_from_args(args: argparse.Namespace):
    """A validated TrainingConfig: the file (if any) or the Kimi preset, then the flags on top."""
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.kimi25_config import get_kimi25_config

    overrides = {
        "use_4bit": args.use_4bit or None,
        "num_outer_iterations": args.iterations,
        "resume": args.resume or None,
        "trust_remote_code": args.trust_remote_code or None,
        "seed": args.seed,
        "wandb_project": args.wandb_project,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.config:
        config = TrainingConfig.from_file(args.config)
        flags = {"model_name": args.model if args.model != "tiny-kimi-k2.5" else None, "task": args.task
                 if args.task != "customer_service" else None, "output_dir": args.output_dir}
        values = {**config.model_dump(), **{k: v for k, v in flags.items() if v is not None}, **overrides}
        if args.use_lora:
            values["use_lora"] = True
        config = TrainingConfig(**values)
    else:
        output_dir = args.output_dir or f"./outputs/{args.task.replace(',', '_')}_gspo"
        config = get_kimi25_config(model_name=args.model, task=args.task, use_lora=args.use_lora,
                                   output_dir=output_dir, **overrides)
    if args.wandb and "wandb" not in config.report_to:
        config = config.model_copy(update={"report_to": [*config.report_to, "wandb"]})
        config = TrainingConfig(**config.model_dump())
    return config


def run_training(config) -> int:
    from stateset_agents.models.loading import ModelNotAvailableError, UnsupportedSettingError
    from stateset_agents.training.trainer import GSPOTrainer

    try:
        trainer = GSPOTrainer(config)
    except (ModelNotAvailableError, UnsupportedSettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = trainer.train()
    print(f"Done. Metrics: {result.output_dir / 'metrics.jsonl'}  Report: {result.output_dir / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stateset-agents", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="fine-tune an agent with GSPO")
    add_training_flags(train)
    build = commands.add_parser("build-tiny-model", help="build (or rebuild) the embedded tiny Kimi-K2.5")
    build.add_argument("--name", default="tiny-kimi-k2.5", choices=["tiny-kimi-k2.5", "tiny-kimi-k2.5-base"])
    args = parser.parse_args(argv)
    if args.command == "train":
        try:
            config = config_from_args(args)
        except ValueError as error:  # pydantic's ValidationError is a ValueError: say which field
            print(f"error: invalid configuration:\n{error}", file=sys.stderr)
            return 2
        return run_training(config)
    if args.command == "build-tiny-model":
        from stateset_agents.models.registry import ensure_embedded_model

        print(ensure_embedded_model(args.name))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
