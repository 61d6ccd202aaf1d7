"""Turn a loaded model into the trainable policy: LoRA adapters (or full fine-tuning), optimizer, schedule.

With LoRA the reference policy is the same model with the adapter disabled (DESIGN.md invariant
5): no second copy of the weights. Full fine-tuning keeps a frozen reference copy only when a
reference KL is requested, and says so.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import torch


def apply_lora(model, config, log: Callable[[str], None] = print):
    """Wrap `model` with PEFT LoRA on the resolved targets; write what was adapted to `lora_targets.json`."""
    from peft import get_peft_model

    from stateset_agents.models.lora_targets import resolve_lora_targets, trainable_parameter_report

    plan = resolve_lora_targets(model, config.lora_target_modules, include_experts=config.lora_target_experts)
    log(plan.describe())
    peft_model = get_peft_model(model, plan.build_lora_config(config.lora_r, config.lora_alpha, config.lora_dropout))
    report = trainable_parameter_report(peft_model)
    log(f"LoRA: {report['trainable']:,} trainable of {report['total']:,} parameters")
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "lora_targets.json").write_text(json.dumps({"plan": plan.describe(), "report": report}, indent=2,
                                                         default=str))
    return peft_model


def prepare_policy(model, config, log: Callable[[str], None] = print):
    """The model to optimise, with gradient checkpointing if asked."""
    policy = apply_lora(model, config, log) if config.use_lora else model
    if not config.use_lora:
        for parameter in policy.parameters():
            parameter.requires_grad_(True)
    if config.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.use_lora and hasattr(policy, "enable_input_require_grads"):
            policy.enable_input_require_grads()
    return policy


def reference_context(policy, config, log: Callable[[str], None] = print) -> Callable[[], Any]:
    """A context manager factory under which `policy` acts as the reference policy."""
    if config.use_lora:
        return policy.disable_adapter
    log("Full fine-tuning with a reference KL: keeping a frozen copy of the initial model as the reference.")
    reference = copy.deepcopy(policy).eval().requires_grad_(False)

    @contextmanager
    def swap():  # score with the frozen copy by temporarily routing forward calls to it
        original = policy.forward
        policy.forward = reference.forward
        try:
            yield
        finally:
            policy.forward = original

    return swap


def no_reference() -> Any:
    return nullcontext()


def build_optimizer(policy, config):
    from transformers import get_scheduler

    parameters = [p for p in policy.parameters() if p.requires_grad]
    if not parameters:
        raise RuntimeError("the policy has no trainable parameters (check use_lora and lora_target_modules)")
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.weight_decay)
    return optimizer, lambda total_steps: get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps, num_training_steps=max(total_steps, 1)
    )
