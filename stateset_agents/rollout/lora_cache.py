"""LoRA weights folded once per `generate` call instead of applied at every decode step.

During sampling the adapter does not change, yet PEFT pays for it at every forward: a LoRA
Linear runs three matmuls (W x, A x, B (A x)) and its Python wrapper; a fused-expert adapter
rebuilds its whole expert stack. `sampling_weights(model)` removes both costs for the duration
of a no-grad block (`HFGenerator.generate`): on the small benchmark model it cuts generation
time by ~45% (benchmarks/RESULTS.md). Gradients, the trainer's scoring and the reference
policy (adapter disabled) never see these weights.

Routed experts. PEFT adapts fused 3D expert tensors (`target_parameters`, `ParamWrapper`) by registering a
parametrization on every forward call: `W + scaling * B @ A` is rebuilt for the whole expert
stack of every MoE layer at every decode step, plus the cost of registering and removing the
parametrization. The weights do not change during sampling, so `cached_expert_lora(model)`
enters every wrapper's adapter context once, inside `torch.nn.utils.parametrize.cached()`, and
makes the wrappers call their base layer directly until it exits. The adapted weight is computed
by PEFT's own code, once, so generation produces bitwise the same outputs as without the cache
(tests/test_rollout_lora_cache.py).

Cost: the adapted expert stacks of all layers are alive at once during sampling (one extra copy
of the adapted expert weights; LoRA's own per-forward path holds one layer's at a time).

Linears. `merged_linear_lora(model)` runs each LoRA Linear as one matmul with `W + s B A`
(see its docstring for the rounding).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch


def _expert_wrappers(model) -> list:
    try:
        from peft.tuners.lora.layer import ParamWrapper
    except ImportError:  # peft without target_parameters support
        return []
    return [m for m in model.modules() if isinstance(m, ParamWrapper)
            and not m.disable_adapters and not m.merged and any(a in m.lora_A for a in m.active_adapters)]


@contextmanager
def cached_expert_lora(model) -> Iterator[int]:
    """No-grad only. Yields the number of expert parameters whose adapted weight is cached."""
    wrappers = _expert_wrappers(model)
    if not wrappers or torch.is_grad_enabled():
        yield 0
        return
    with ExitStack() as stack:
        stack.enter_context(torch.nn.utils.parametrize.cached())
        for wrapper in wrappers:  # outermost first, as their nested forwards would
            stack.enter_context(wrapper._activate_lora(wrapper.active_adapters))
        for wrapper in wrappers:  # an instance attribute shadows ParamWrapper.forward (no per-call activation)
            wrapper.forward = _base_forward(wrapper.get_base_layer())
        try:
            yield len(wrappers)
        finally:
            for wrapper in wrappers:
                del wrapper.forward


def _base_forward(base):
    def forward(*args, **kwargs):
        return base(*args, **kwargs)

    return forward


def _linear_wrappers(model) -> list:
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return []
    out = []
    for module in model.modules():
        if not isinstance(module, LoraLinear) or module.disable_adapters or module.merged:
            continue
        active = [a for a in module.active_adapters if a in module.lora_A]
        if not active or any(a in module.lora_variant for a in active) or module.fan_in_fan_out:
            continue
        if module.training and any(getattr(module.lora_dropout[a], "p", 0.0) for a in active):
            continue  # dropout would act: the merged weight would not be the same function
        if isinstance(module.get_base_layer(), torch.nn.Linear):
            out.append((module, active))
    return out


@contextmanager
def merged_linear_lora(model) -> Iterator[int]:
    """No-grad only: each LoRA Linear runs as one matmul with `W + scaling * B @ A` (built once).

    Not bitwise: `(W + sBA) x` and `W x + s B (A x)` round differently (~1e-7 relative; the
    sampler-vs-trainer logprob gap stays ~1e-6, like the KV-cache's own reordering). The base
    weights are never modified; the merged weights are a temporary copy of the adapted Linears.
    """
    wrappers = _linear_wrappers(model)
    if not wrappers or torch.is_grad_enabled():
        yield 0
        return
    try:
        for module, active in wrappers:
            base = module.get_base_layer()
            weight = base.weight + sum(module.get_delta_weight(a) for a in active).to(base.weight.dtype)
            module.forward = _merged_forward(weight, base.bias)
        yield len(wrappers)
    finally:
        for module, _ in wrappers:
            vars(module).pop("forward", None)


def _merged_forward(weight: torch.Tensor, bias: torch.Tensor | None):
    def forward(x, *args, **kwargs):
        return torch.nn.functional.linear(x, weight, bias)

    return forward


@contextmanager
def sampling_weights(model) -> Iterator[None]:
    """Both: adapted expert weights cached (bitwise) and LoRA Linears merged, for one `generate` call."""
    with cached_expert_lora(model), merged_linear_lora(model):
        yield
