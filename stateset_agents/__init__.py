"""stateset_agents: RL fine-tuning of multi-turn LLM agents with GSPO/GRPO and LoRA."""

__version__ = "0.1.0"
