"""Fine-tune Kimi-K2.5 (or the embedded tiny-kimi-k2.5) as a conversational agent with GSPO.

    python examples/finetune_kimi25_gspo.py --model tiny-kimi-k2.5 --task customer_service --use-lora
    python examples/finetune_kimi25_gspo.py --model moonshotai/Kimi-K2.5 --task technical_support \
        --use-lora --wandb --wandb-project kimi25-rl-training

Reads top to bottom: flags -> TrainingConfig (the Kimi-K2.5 preset, see
stateset_agents/training/kimi25_config.py) -> GSPOTrainer -> metrics, checkpoints, report.
"""

import argparse
import sys

from stateset_agents.cli import add_training_flags, config_from_args, run_training


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_flags(parser)
    args = parser.parse_args()
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    print(f"Training {config.model_name} on {config.task} -> {config.output_dir}")
    return run_training(config)


if __name__ == "__main__":
    sys.exit(main())
