"""`stateset-agents` command line: train from flags or a config file, build the tiny model, evaluate, chat.

    stateset-agents train --model tiny-kimi-k2.5 --task customer_service --use-lora
    stateset-agents train --config outputs/run/config.yaml --resume
    stateset-agents sft --model tiny-kimi-k2.5-base --data transcripts.jsonl --output-dir outputs/sft
    stateset-agents build-tiny-model [--ship | --verify-shipped | --restamp]
    stateset-agents plan --model moonshotai/Kimi-K2.5 --gpu-memory 141 --gpus-per-node 8
    stateset-agents eval --model tiny-kimi-k2.5 --adapter outputs/run --task customer_service --json eval.json
    stateset-agents chat --model tiny-kimi-k2.5 --adapter outputs/run --task customer_service
    stateset-agents export outputs/run --out exports/run-merged --merge
    stateset-agents serve exports/run-merged --engine vllm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The guide's flags (plus --iterations, --resume, --config). Every default is None, so a flag
    that was given always wins over --config or a resumed run's config, even when it equals a default."""
    parser.add_argument("--model", default=None,
                        help="model name: embedded (tiny-kimi-k2.5, the default), local directory, or hub id "
                             "(moonshotai/Kimi-K2.5)")
    parser.add_argument("--task", default=None,
                        help="customer_service (default), technical_support, sales, the path of a file domain "
                             "(examples/domains/telecom_billing, see docs/domains.md), or a comma-separated sequence")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument("--use-lora", dest="use_lora", action="store_true", default=None,
                      help="train LoRA adapters (the default of the Kimi preset)")
    lora.add_argument("--no-lora", dest="use_lora", action="store_false", default=None,
                      help="full fine-tuning instead of LoRA (every weight trains)")
    parser.add_argument("--use-4bit", action="store_true", default=None,
                        help="load the base model 4-bit with bitsandbytes (QLoRA; CUDA only)")
    parser.add_argument("--wandb", action="store_true", default=None, help="log to Weights & Biases")
    parser.add_argument("--wandb-project", default=None, help="W&B project name")
    parser.add_argument("--output-dir", default=None, help="where config, metrics, checkpoints and the report go")
    parser.add_argument("--iterations", type=int, default=None, help="outer iterations (num_outer_iterations)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --output-dir as it was configured (its config.yaml)")
    parser.add_argument("--config", default=None, help="a TrainingConfig YAML/JSON file; flags given override it")
    parser.add_argument("--trust-remote-code", action="store_true", default=None,
                        help="allow model code shipped with the checkpoint")
    parser.add_argument("--seed", type=int, default=None)
    llm = parser.add_argument_group("LLM customer, LLM judge, custom reward (docs/llm_user_and_judge.md)")
    llm.add_argument("--user-simulator", choices=["rule", "llm"], default=None,
                     help="who plays the customer: rule (scripted, the default) or llm (a chat model)")
    llm.add_argument("--user-model-url", default=None,
                     help="OpenAI-compatible server of the LLM customer, e.g. http://127.0.0.1:8001 (vLLM)")
    llm.add_argument("--user-model", default=None,
                     help="the LLM customer's model: the name sent to --user-model-url, or without a URL a local "
                          "model run in-process (e.g. tiny-kimi-k2.5)")
    llm.add_argument("--reward", default=None,
                     help="your own reward as module:Class (or path/to/file.py:Class) instead of the task's")
    llm.add_argument("--judge-model-url", default=None, help="OpenAI-compatible server of the LLM judge")
    llm.add_argument("--judge-model", default=None,
                     help="the judge's model: the name sent to --judge-model-url, or a local model run in-process")
    llm.add_argument("--judge-weight", type=float, default=None,
                     help="share of the reward that comes from the judge, added to the task's reward (0 < w < 1)")
    llm.add_argument("--judge-mode", choices=["pointwise", "group"], default=None,
                     help="pointwise: one judge call per episode; group: the group's episodes compared in one call")
    llm.add_argument("--judge-rubric", default=None, help="a YAML file of the judge's criteria")


# flag -> TrainingConfig field (--wandb, --config and --resume are handled apart)
FLAG_FIELDS = {
    "model": "model_name", "task": "task", "use_lora": "use_lora", "use_4bit": "use_4bit",
    "output_dir": "output_dir", "iterations": "num_outer_iterations", "trust_remote_code": "trust_remote_code",
    "seed": "seed", "wandb_project": "wandb_project",
    "user_simulator": "user_simulator", "user_model_url": "user_model_url", "user_model": "user_model",
    "reward": "reward", "judge_model_url": "judge_model_url", "judge_model": "judge_model",
    "judge_weight": "judge_weight", "judge_mode": "judge_mode", "judge_rubric": "judge_rubric",
}


def config_from_args(args: argparse.Namespace):
    """A validated TrainingConfig: the --config file, or with --resume the run's saved config, or the
    Kimi preset; the flags that were given go on top. Raises ValueError with a message for the user."""
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.kimi25_config import get_kimi25_config
    from stateset_agents.training.run_dir import saved_run_config
    from stateset_agents.tasks.file_domain import task_slug

    given = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) is not None}
    if args.resume:
        given["resume"] = True
    task = given.get("task", "customer_service")
    output_dir = given.get("output_dir") or f"./outputs/{task_slug(task)}_gspo"  # a domain path: its name
    saved = saved_run_config(output_dir) if args.resume and not args.config else None
    if args.config:
        config = TrainingConfig.from_file(args.config).replace(**given)
    elif saved is not None:  # --resume: the run continues exactly as configured, flags are checked against it
        config = saved.replace(**given)
    else:
        preset = {"model_name": "tiny-kimi-k2.5", **given, "output_dir": output_dir}  # LoRA unless --no-lora
        config = get_kimi25_config(**preset)
    if args.wandb and "wandb" not in config.report_to:
        config = config.replace(report_to=[*config.report_to, "wandb"])
    return config


def describe_config(config) -> str:
    """The settings that differ from TrainingConfig's defaults, one per line (all are in config.yaml)."""
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.run_dir import short_repr

    defaults = TrainingConfig.model_construct().model_dump(mode="json")
    values = config.model_dump(mode="json")
    changed = [f"  {name}: {short_repr(values[name], width=100)}" for name in values if values[name] != defaults[name]]
    return "\n".join(["Effective config (settings that differ from the defaults):", *changed])


def run_training(config) -> int:
    from stateset_agents.models.loading import ModelNotAvailableError, UnsupportedSettingError
    from stateset_agents.rewards.base import RewardError
    from stateset_agents.rewards.custom_reward import RewardLoadError
    from stateset_agents.rewards.llm_judge import RubricError
    from stateset_agents.rollout.chat_client import ChatModelError
    from stateset_agents.tasks.registry import UnknownTaskError
    from stateset_agents.training.run_dir import RunDirectoryError
    from stateset_agents.training.trainer import GSPOTrainer

    from stateset_agents.training.distributed import is_main_process

    say = print if is_main_process() else (lambda *args, **kwargs: None)  # one rank speaks under accelerate
    say(describe_config(config))
    from stateset_agents.commands.cpu_load import warn_if_cpu_busy

    warn_if_cpu_busy(config.device, say)
    try:
        trainer = GSPOTrainer(config)
    except (ModelNotAvailableError, UnsupportedSettingError, UnknownTaskError, RunDirectoryError, RewardLoadError,
            RubricError, ChatModelError) as error:
        return fail(str(error))
    try:
        result = trainer.train()
    except RewardError as error:  # a reward function's output the run cannot train on (it says which)
        return fail(f"{error} (checkpoints up to the last complete iteration are kept; fix the reward, then "
                    f"--resume)")
    say(f"Done. Metrics: {result.output_dir / 'metrics.jsonl'}  Report: {result.output_dir / 'report.md'}")
    return 0


def fail(message: str) -> int:
    """Print one `error: ...` line and return the usage-error exit status."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def train_from_args(args: argparse.Namespace) -> int:
    """Flags -> config -> training, with every bad input reported as one `error:` line (exit status 2)."""
    from pydantic import ValidationError

    from stateset_agents.training.config import describe_validation_error

    try:
        config = config_from_args(args)
    except ValidationError as error:  # say which field, without pydantic's boilerplate
        return fail(f"invalid configuration: {describe_validation_error(error)}")
    except ValueError as error:  # a config file that is missing or not YAML/JSON
        return fail(str(error))
    return run_training(config)


def plan_from_args(args: argparse.Namespace) -> int:
    """Print the plan (training/plan.py); a missing config or a bad flag is one `error:` line."""
    from stateset_agents.training.plan import run_plan

    try:
        print(run_plan(args))
    except ValueError as error:  # PlanError, a bad TrainingConfig file, a LoRA target that matches nothing
        return fail(str(error))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stateset-agents", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="fine-tune an agent with GSPO")
    add_training_flags(train)
    build = commands.add_parser("build-tiny-model", help="build (or rebuild) the embedded tiny Kimi-K2.5")
    build.add_argument("--name", default="tiny-kimi-k2.5", choices=["tiny-kimi-k2.5", "tiny-kimi-k2.5-base"])
    shipped = build.add_mutually_exclusive_group()
    shipped.add_argument("--ship", action="store_true",
                         help="maintainers: rebuild from nothing and replace the copy shipped in the package")
    shipped.add_argument("--verify-shipped", action="store_true",
                         help="rebuild from nothing and check the shipped copy bit for bit (exit 1 if it differs)")
    shipped.add_argument("--restamp", action="store_true",
                         help="maintainers: after a code edit that leaves the build's inputs unchanged (checked, "
                              "~2 min), record this checkout's fingerprint in the shipped manifest (exit 1 if stale)")
    build.add_argument("--resume-after", nargs=2, metavar=("STAGE", "DIR"), help=(
        "with --ship: start from DIR, a model after the warm start's STAGE (first_pass, practice or habit; "
        "e.g. the previous shipped copy when only later stages changed), and run only the later stages"))
    from stateset_agents.training.plan import add_plan_arguments

    add_plan_arguments(commands.add_parser("plan", help="will it fit, and on what? GPUs for training and rollouts"))
    from stateset_agents.commands import chat_command, eval_command, export_command, serve_command, sft_command

    eval_command.add_eval_arguments(commands.add_parser(
        "eval", help="held-out reward, success rate and reward components with 95%% intervals (--against: two "
                     "policies side by side)", description=eval_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    chat_command.add_chat_arguments(commands.add_parser(
        "chat", help="talk to the agent as the customer, with the task's tools live", description=chat_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    export_command.add_export_arguments(commands.add_parser(
        "export", help="a run's adapter for vLLM, or (--merge) a full checkpoint with it folded in",
        description=export_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    sft_command.add_sft_arguments(commands.add_parser(
        "sft", help="supervised fine-tuning on transcripts (JSONL of OpenAI messages): the warm start before RL",
        description=sft_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    serve_command.add_serve_arguments(commands.add_parser(
        "serve", help="launch commands for vLLM/SGLang/ktransformers; --run: start vLLM here and smoke-test it",
        description=serve_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan_from_args(args)
    if args.command == "eval":
        return eval_command.eval_from_args(args)
    if args.command == "chat":
        return chat_command.chat_from_args(args)
    if args.command == "export":
        return export_command.export_from_args(args)
    if args.command == "serve":
        return serve_command.serve_from_args(args)
    if args.command == "sft":
        return sft_command.sft_from_args(args)
    if args.command == "train":
        return train_from_args(args)
    if args.command == "build-tiny-model":
        from stateset_agents.embedded import ensure_embedded_model, shipped

        if args.resume_after and not args.ship:
            raise SystemExit("--resume-after goes with --ship")
        if args.ship:
            stage, directory = args.resume_after or (None, None)
            from stateset_agents.training.warm_start import RESUME_POINTS

            if stage is not None and stage not in RESUME_POINTS:
                raise SystemExit(f"--resume-after: STAGE must be one of {', '.join(RESUME_POINTS)}; got {stage!r}")
            shipped.ship(args.name, resume_after=stage, resume_from=directory)
            return 0
        if args.restamp:
            return 0 if shipped.restamp(args.name) else 1
        if args.verify_shipped:
            problems = shipped.verify(args.name)
            print("\n".join(problems) if problems else f"The shipped {args.name} is bit for bit what a rebuild gives.")
            return 1 if problems else 0
        print(ensure_embedded_model(args.name))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
