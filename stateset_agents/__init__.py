"""stateset_agents: RL fine-tuning of multi-turn LLM agents with GSPO/GRPO and LoRA."""

__version__ = "0.1.0"

# Registers the embedded model names (tiny-kimi-k2.5...) with `models.loading` (light: builds are lazy).
from stateset_agents import embedded as _embedded  # noqa: E402,F401
