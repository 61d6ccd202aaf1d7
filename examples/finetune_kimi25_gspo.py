"""Fine-tune Kimi-K2.5 (or the embedded tiny-kimi-k2.5) as a conversational agent with GSPO.

    python examples/finetune_kimi25_gspo.py --model tiny-kimi-k2.5 --task customer_service --use-lora
    python examples/finetune_kimi25_gspo.py --model moonshotai/Kimi-K2.5 --task technical_support \
        --use-lora --wandb --wandb-project kimi25-rl-training
    python examples/finetune_kimi25_gspo.py --model tiny-kimi-k2.5 --task examples/domains/telecom_billing \
        --use-lora      # a support domain declared in files (docs/domains.md)

Reads top to bottom: flags -> TrainingConfig (the Kimi-K2.5 preset, see
stateset_agents/training/kimi25_config.py) -> GSPOTrainer -> metrics, checkpoints, report.
"""

import argparse
import sys

from stateset_agents.cli import add_training_flags, train_from_args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_flags(parser)
    return train_from_args(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
