"""Resolve requested LoRA target names to the modules and parameters a model really has.

Users write Llama-style target lists (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
`up_proj`, `down_proj`). Kimi-K2.5 / DeepSeek-V3 has none of the attention names in its text
model, and PEFT's own name matching goes wrong on it in two silent ways (checked on peft 0.21.2,
transformers 5.24):

1. On the `Kimi_K25ForConditionalGeneration` wrapper, `q_proj`/`k_proj`/`v_proj` match only the
   *vision tower*. We therefore restrict targets to the language model (`*.language_model`)
   unless `include_vision=True`.
2. On plain DeepSeek-V3-style models (`config.model_type` in transformers'
   `_MODEL_TO_CONVERSION_PATTERN` with Qwen2-MoE fusing), `get_peft_model` rewrites every
   target ending in `gate_proj`/`up_proj`/`down_proj` - a full module name or a regex alike - into
   the fused routed-expert parameters and drops the dense-layer and shared-expert MLPs. Those
   Linear modules cannot be adapted through `target_modules` there; we leave them out and say so
   in `LoraTargetPlan.notes`. (The K2.5 wrapper, `model_type="kimi_k25"`, is not rewritten.)

The plan passes *full module names* as `target_modules` (PEFT matches list entries exactly or
as dotted suffixes) and full parameter names as `target_parameters` (how PEFT reaches fused 3D
expert tensors; those refuse `lora_dropout != 0`).

Mapping used on MLA (DeepSeek-V2/V3, Kimi-K2/K2.5) models:

    q_proj            -> q_a_proj, q_b_proj   (q_proj when q_lora_rank is None)
    k_proj, v_proj    -> kv_a_proj_with_mqa, kv_b_proj
    o_proj            -> o_proj
    gate_proj/up_proj -> dense + shared-expert gate_proj/up_proj, routed experts' gate_up_proj
    down_proj         -> dense + shared-expert down_proj, routed experts' down_proj

The expert mapping (gate/up -> fused `gate_up_proj`, down -> `down_proj`) applies to any model
with fused experts (Qwen3-MoE, Mixtral on transformers v5, ...).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

__all__ = [
    "LoraTargetError",
    "LoraTargetPlan",
    "resolve_lora_targets",
    "trainable_parameter_report",
    "target_kind",
]

_MLA_MARKERS = ("kv_a_proj_with_mqa", "q_a_proj")
_MLA_MODEL_TYPES = {"deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2", "kimi_k25"}
_MLA_ALIASES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q_a_proj", "q_b_proj", "q_proj"),
    "k_proj": ("kv_a_proj_with_mqa", "kv_b_proj"),
    "v_proj": ("kv_a_proj_with_mqa", "kv_b_proj"),
}
# Requested (unfused, Llama/Mixtral-v4 style) name -> names of fused 3D expert parameters.
_EXPERT_ALIASES: dict[str, tuple[str, ...]] = {
    "gate_proj": ("gate_up_proj", "gate_proj"),
    "up_proj": ("gate_up_proj", "up_proj"),
    "down_proj": ("down_proj",),
    "w1": ("gate_up_proj",),
    "w3": ("gate_up_proj",),
    "w2": ("down_proj",),
    "gate_up_proj": ("gate_up_proj",),
}
_LINEAR_CLASS_NAMES = {"Linear", "Conv1D"}  # torch.nn.Linear, transformers' GPT-2 Conv1D


class LoraTargetError(ValueError):
    """A LoRA target request matched nothing (or is inconsistent); the message lists candidates."""


@dataclass
class LoraTargetPlan:
    """What to adapt, resolved against one concrete model.

    - `target_modules`: full names of Linear/Conv1D modules, for `peft.LoraConfig(target_modules=)`.
    - `target_parameters`: full names of fused 3D expert parameters `[E, d_out, d_in]`, for
      `peft.LoraConfig(target_parameters=)`.
    - `matches`: requested name (or `"auto"`) -> the full module/parameter names it mapped to.
    - `missing`: requested names that matched nothing in scope.
    - `shapes`: full name -> weight shape, used to estimate adapter size.
    """

    target_modules: list[str]
    target_parameters: list[str]
    matches: dict[str, list[str]]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    architecture: str = "generic"
    scope: str = ""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def lora_parameter_count(self, r: int) -> int:
        """LoRA parameters added at rank `r`: r*(d_in+d_out) per module, r*E*(d_in+d_out) per
        fused expert tensor (PEFT stacks one rank-r pair per expert)."""
        total = 0
        for name in (*self.target_modules, *self.target_parameters):
            shape = self.shapes[name]
            experts = shape[0] if len(shape) == 3 else 1
            total += r * experts * (shape[-1] + shape[-2])
        return total

    def describe(self, r: int | None = None) -> str:
        """Human summary: per requested name, what it mapped to (with counts)."""
        lines = [f"LoRA targets (architecture={self.architecture}, scope={self.scope or '<whole model>'}):"]
        for requested, names in self.matches.items():
            counts = Counter(_display_name(n) for n in names)
            mapped = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "NOTHING"
            lines.append(f"  {requested} -> {mapped}")
        lines.append(
            f"  total: {len(self.target_modules)} modules, {len(self.target_parameters)} expert parameter tensors"
        )
        if r is not None:
            lines.append(f"  LoRA parameters at r={r}: {self.lora_parameter_count(r):,}")
        lines += [f"  missing: {name}" for name in self.missing]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def build_lora_config(self, r: int, alpha: float, dropout: float = 0.0, **kwargs: Any):
        """A `peft.LoraConfig` for this plan. `kwargs` go to `LoraConfig` (e.g. `task_type`).

        Raises `LoraTargetError` when `dropout != 0` and routed experts are targeted: PEFT's
        `target_parameters` (ParamWrapper) cannot apply dropout to the input of a fused tensor.
        """
        from peft import LoraConfig

        if dropout and self.target_parameters:
            raise LoraTargetError(
                f"lora_dropout={dropout} cannot be used with routed-expert targets "
                f"({len(self.target_parameters)} fused expert tensors via PEFT target_parameters, which "
                "refuses dropout). Set lora_dropout=0.0, or exclude experts (lora_target_experts=False)."
            )
        return LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(self.target_modules) or None,
            target_parameters=list(self.target_parameters) or None,
            **kwargs,
        )


def resolve_lora_targets(
    model: nn.Module,
    requested: Sequence[str] | None = None,
    include_experts: bool = True,
    include_vision: bool = False,
) -> LoraTargetPlan:
    """Map `requested` target names (None = auto: every attention and MLP projection) to `model`.

    Works on models on the meta device. Requested names are leaf names (`q_proj`) or dotted
    suffixes (`self_attn.q_proj`), matched like PEFT does. Raises `LoraTargetError` listing the
    model's candidate names when nothing matches; warns when only some requested names match.
    """
    scope = "" if include_vision else _language_model_scope(model)
    linears, experts, shapes = _candidates(model, scope)
    mla = _is_mla(model, linears)
    rewritten = _peft_rewritten_leaves(model)
    excluded = _output_embedding_names(model) if requested is None else set()
    keys = ["auto"] if requested is None else list(dict.fromkeys(requested))
    matches: dict[str, list[str]] = {}
    for key in keys:
        module_names = [n for n in linears if n not in excluded and _matches(n, key, mla)]
        param_names = [n for n in experts if include_experts and _matches_expert(n, key)]
        matches[key] = module_names + param_names
    plan = LoraTargetPlan(
        target_modules=_unique(n for names in matches.values() for n in names if n in linears),
        target_parameters=_unique(n for names in matches.values() for n in names if n in experts),
        matches=matches,
        architecture="mla" if mla else "generic",
        scope=scope,
        shapes=shapes,
    )
    _drop_peft_rewritten(plan, rewritten, getattr(getattr(model, "config", None), "model_type", None))
    _check_plan(plan, model, scope, linears, experts, include_experts)
    return plan


def trainable_parameter_report(peft_model: nn.Module) -> dict[str, Any]:
    """Trainable vs total parameter counts, and trainable counts per `target_kind`."""
    trainable, total = 0, 0
    by_kind: Counter[str] = Counter()
    for name, param in peft_model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            by_kind[target_kind(name)] += param.numel()
    return {
        "trainable": trainable,
        "total": total,
        "trainable_fraction": trainable / total if total else 0.0,
        "by_kind": dict(by_kind),
    }


def target_kind(name: str) -> str:
    """Classify a module/parameter name: vision, routed_experts, shared_experts, attention, mlp, other."""
    if "vision" in name:
        return "vision"
    if "shared_expert" in name:
        return "shared_experts"
    if re.search(r"(^|\.)experts(\.|$)", name):
        return "routed_experts"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name or "feed_forward" in name:
        return "mlp"
    return "other"


# --- candidates -------------------------------------------------------------------------------


def _language_model_scope(model: nn.Module) -> str:
    """Name of the shallowest `*language_model` submodule, or "" (whole model) if there is none."""
    names = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] == "language_model"]
    return min(names, key=lambda n: n.count("."), default="")


def _in_scope(name: str, scope: str) -> bool:
    return not scope or name.startswith(scope + ".")


def _candidates(model: nn.Module, scope: str) -> tuple[list[str], list[str], dict[str, tuple[int, ...]]]:
    """Linear/Conv1D module names and fused 3D expert parameter names inside `scope`, with shapes."""
    linears, experts, shapes = [], [], {}
    for name, module in model.named_modules():
        if not _in_scope(name, scope):
            continue
        if type(module).__name__ in _LINEAR_CLASS_NAMES and hasattr(module, "weight"):
            linears.append(name)
            shapes[name] = tuple(module.weight.shape)
        for param_name, param in module.named_parameters(recurse=False):
            if param.dim() == 3 and _is_expert_container(name, module):
                full = f"{name}.{param_name}" if name else param_name
                experts.append(full)
                shapes[full] = tuple(param.shape)
    return linears, experts, shapes


def _is_expert_container(name: str, module: nn.Module) -> bool:
    return name.rsplit(".", 1)[-1] == "experts" or type(module).__name__.endswith("Experts")


def _is_mla(model: nn.Module, linears: list[str]) -> bool:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in _MLA_MODEL_TYPES:
        return True
    return any(n.rsplit(".", 1)[-1] in _MLA_MARKERS for n in linears)


def _output_embedding_names(model: nn.Module) -> set[str]:
    """Names of the LM head (never an "auto" target)."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return {n for n, m in model.named_modules() if head is not None and m is head} | {
        n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] == "lm_head"
    }


# --- matching ---------------------------------------------------------------------------------


def _matches(name: str, requested: str, mla: bool) -> bool:
    """Does module `name` match `requested` ("auto", a leaf name or a dotted suffix)?"""
    if requested == "auto":
        return True
    prefix, _, leaf = requested.rpartition(".")
    leaves = _MLA_ALIASES.get(leaf, (leaf,)) if mla else (leaf,)
    return any(_suffix_match(name, f"{prefix}.{alias}" if prefix else alias) for alias in leaves)


def _matches_expert(name: str, requested: str) -> bool:
    """Does fused expert parameter `name` (e.g. `...mlp.experts.gate_up_proj`) match `requested`?"""
    if requested == "auto":
        return True
    leaf = requested.rpartition(".")[2]
    return name.rsplit(".", 1)[-1] in _EXPERT_ALIASES.get(leaf, ())


def _suffix_match(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))


def _display_name(name: str) -> str:
    """`model.language_model.layers.7.mlp.shared_experts.gate_proj` -> `mlp.shared_experts.gate_proj`."""
    return re.sub(r"^(.*\.)?\d+\.", "", name)


# --- PEFT's DeepSeek-style rewrite and final checks ---------------------------------------------


def _peft_rewritten_leaves(model: nn.Module) -> set[str]:
    """Leaf names PEFT's transformers-v5 MoE conversion would rewrite into expert targets."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        from peft.utils import transformers_weight_conversion as conv
    except ImportError:  # peft without the v5 conversion, or transformers < 5
        return set()
    base = conv._MODEL_TO_CONVERSION_PATTERN.get(model_type)
    if base is None or not conv._MOE_FUSED_TARGETS.get(base):
        return set()
    return set(conv._MOE_TARGET_MODULE_MAPPING.get(base, {}))


def _drop_peft_rewritten(plan: LoraTargetPlan, leaves: set[str], model_type: str | None) -> None:
    dropped = [n for n in plan.target_modules if n.rsplit(".", 1)[-1] in leaves]
    if not dropped:
        return
    plan.target_modules = [n for n in plan.target_modules if n not in dropped]
    for key, names in plan.matches.items():
        plan.matches[key] = [n for n in names if n not in dropped]
    plan.notes.append(
        f"{len(dropped)} dense/shared-expert MLP modules ({', '.join(sorted(leaves))}) left out: on "
        f"model_type={model_type!r} PEFT rewrites such targets into routed-expert parameters and "
        "skips the Linear modules. Load the model through its Kimi-K2.5 wrapper to adapt them."
    )


def _check_plan(
    plan: LoraTargetPlan,
    model: nn.Module,
    scope: str,
    linears: list[str],
    experts: list[str],
    include_experts: bool,
) -> None:
    """Raise when nothing matched; warn about requested names that matched nothing."""
    plan.missing = [key for key, names in plan.matches.items() if not names]
    if not plan.target_modules and not plan.target_parameters:
        raise LoraTargetError(_nothing_matched_message(plan, model, scope, linears, experts, include_experts))
    for name in plan.missing:
        plan.notes.append(f"requested {name!r} matched nothing in {scope or 'the model'}")
        warnings.warn(f"LoRA target {name!r} matched nothing; the others did. {plan.notes[-1]}", stacklevel=3)


def _nothing_matched_message(
    plan: LoraTargetPlan,
    model: nn.Module,
    scope: str,
    linears: list[str],
    experts: list[str],
    include_experts: bool,
) -> str:
    leaf_names = sorted({n.rsplit(".", 1)[-1] for n in linears})
    expert_names = sorted({_display_name(n) for n in experts})
    outside = sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if not _in_scope(n, scope) and any(_suffix_match(n, k) for k in plan.matches)
        }
    )
    message = (
        f"LoRA targets {list(plan.matches)} matched nothing in {scope or 'the model'} "
        f"({type(model).__name__}). Candidate Linear module names: {leaf_names}. "
        f"Fused 3D expert parameters: {expert_names or 'none'}."
    )
    if outside:
        message += (
            f" {outside} exist only outside {scope} (e.g. the vision tower), which is not adapted "
            "(pass include_vision=True to adapt it)."
        )
    if experts and not include_experts:
        message += " Routed experts were excluded (include_experts=False)."
    return message
