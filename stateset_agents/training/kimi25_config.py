"""The Kimi-K2.5 preset: the guide's "automatic configuration" as a validated `TrainingConfig`.

    config = get_kimi25_config(task="customer_service", use_lora=True, output_dir="./outputs/kimi25_gspo")

What it sets, and why (see the guide and DESIGN.md):

- group size 8 (`num_generations`): larger groups steady the advantages of a MoE policy;
- learning rate 3e-6, LoRA r=64 / alpha=128, gradient norm 1.0;
- GSPO with the ratio clipped to [1 - 1.5e-4, 1 + 2.5e-4] (sequence ratios live close to 1);
- `per_device_train_batch_size=1`, `gradient_accumulation_steps=16`, 4 scenarios per iteration:
  32 episodes per rollout, 2 optimizer steps per rollout, so the ratio can move;
- Kimi's sampling advice: thinking on, temperature 1.0 with thinking (0.6 without), top_p 0.95;
- `dtype="auto"`: bfloat16 on GPU, float32 on CPU; LoRA targets "auto" (MLA attention, dense and
  shared MLPs, routed experts; lora_dropout stays 0 as expert adapters require);
- the task's system prompt: a registered task's or file domain's own (it states the tools and
  policies), a generic Kimi prompt for other names; none for a comma-separated task sequence (each
  task uses its own).

Generation length: 4096 new tokens per turn for real checkpoints (thinking is long); embedded
tiny models (`tiny-*`) and small local directories (`is_small_local_model`, e.g. a tiny model after
`stateset-agents sft`) keep the short CPU default. Every keyword in `overrides` must be a
`TrainingConfig` field and wins over the preset.
"""

from __future__ import annotations

from typing import Any

from stateset_agents.core.formats.kimi import kimi_temperature
from stateset_agents.training.config import TrainingConfig

__all__ = [
    "KIMI25_MODEL_NAME",
    "KIMI25_PRESET",
    "GENERIC_SYSTEM_PROMPT",
    "get_kimi25_config",
    "kimi25_system_prompt",
]

KIMI25_MODEL_NAME = "moonshotai/Kimi-K2.5"
GENERIC_SYSTEM_PROMPT = (
    "You are Kimi, an AI assistant created by Moonshot AI. Help the user with their request, use the "
    "available tools when they are needed, and keep your answers brief and accurate."
)
KIMI25_PRESET: dict[str, Any] = {
    "num_generations": 8,
    "scenarios_per_iteration": 4,
    "learning_rate": 3e-6,
    "lora_r": 64,
    "lora_alpha": 128,
    "lora_dropout": 0.0,
    "loss_type": "gspo",
    "clip_epsilon_low": 1.5e-4,
    "clip_epsilon_high": 2.5e-4,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 16,
    "max_grad_norm": 1.0,
    "thinking": True,
    "top_p": 0.95,
    "dtype": "auto",
}
_REAL_CHECKPOINT_SETTINGS: dict[str, Any] = {"max_new_tokens": 4096}


def kimi25_system_prompt(task: str) -> str | None:
    """The system prompt for `task`: a registered task's own, the generic Kimi prompt otherwise,
    None for a sequence of tasks (comma-separated, or a built-in sequence's name)."""
    from stateset_agents.tasks.file_domain import is_domain_path
    from stateset_agents.tasks.registry import TASK_SEQUENCES, get_task, list_tasks

    if "," in task or task in TASK_SEQUENCES:
        return None

    # a file domain's prompt states its tools and policies, like a built-in's (loading it also
    # validates it before anything else runs)
    known = task in list_tasks() or is_domain_path(task)
    return get_task(task).system_prompt if known else GENERIC_SYSTEM_PROMPT


SMALL_HIDDEN_SIZE = 512  # at most this wide: a CPU test bed (the tiny model is 128), not a real checkpoint


def is_small_local_model(model_name: str) -> bool:
    """A local model directory whose config (or its text config) is at most `SMALL_HIDDEN_SIZE` wide,
    e.g. the tiny model after `stateset-agents sft`: it keeps the short CPU generation default."""
    import json
    from pathlib import Path

    config_path = Path(model_name) / "config.json"
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False
    hidden = config.get("hidden_size") or (config.get("text_config") or {}).get("hidden_size")
    return isinstance(hidden, int) and hidden <= SMALL_HIDDEN_SIZE


def get_kimi25_config(
    model_name: str = KIMI25_MODEL_NAME,
    task: str = "customer_service",
    use_lora: bool = True,
    output_dir: str = "./outputs/kimi25_gspo",
    **overrides: Any,
) -> TrainingConfig:
    """A validated `TrainingConfig` with the Kimi-K2.5 preset; `overrides` (TrainingConfig fields) win."""
    values: dict[str, Any] = {**KIMI25_PRESET}
    if not (model_name.startswith("tiny-") or is_small_local_model(model_name)):
        values.update(_REAL_CHECKPOINT_SETTINGS)
    values.update(model_name=model_name, task=task, use_lora=use_lora, output_dir=output_dir)
    values.update(overrides)
    values.setdefault("temperature", kimi_temperature(values["thinking"]))
    if "system_prompt" not in values:
        task_names = values["task"] if isinstance(values["task"], str) else ",".join(values["task"])
        values["system_prompt"] = kimi25_system_prompt(task_names)
    return TrainingConfig(**values)
