"""`stateset-agents plan`: will this fit, and on what? Computed from a model's `config.json` alone.

    plan = plan_model(read_model_config("tests/fixtures/kimi-k2.5-config.json"),
                      LoraSetting(r=64), Hardware(gpu_memory_gib=141, gpus_per_node=8), Workload())
    print(plan.render())          # or plan.to_dict() for JSON

The model is instantiated on the meta device (no weights, a few seconds for Kimi-K2.5), so
parameter counts are exact, and the LoRA targets are resolved by `models.lora_targets` exactly
as training resolves them. Every figure is in bytes; GiB = 2**30 bytes (`--gpu-memory` is GiB).

What is counted, and the assumptions (each also printed with the plan):

- **Parameters.** total = every parameter of the model (buffers excluded). active = the
  parameters a *text* token passes through: the language model (embeddings and LM head
  included) with only `num_experts_per_tok` of the `n_routed_experts` routed experts; the
  vision tower and projector are left out (they run on image patches).
- **Weights.** bf16 = 2 bytes per parameter. Checkpoint format = the config's
  `quantization_config` applied as compressed-tensors applies it: every `Linear` of the language
  model whose name no `ignore` entry matches ("re:" entries are regexes, others exact names)
  stores `num_bits` per weight plus one bf16 scale per `group_size` weights (one per output row
  for `strategy: channel`; a zero point of the same count when not symmetric) and 8 bytes of
  `weight_shape`; fused routed-expert tensors `[E, out, in]` count as the E Linear modules per
  projection the checkpoint stores. Everything else stays in the checkpoint dtype. The vision
  tower is kept in bf16 (the published Kimi-K2.5 stores its vision weights as plain `.weight`).
- **LoRA.** Parameters = `LoraTargetPlan.lora_parameter_count(r)`. Training state per LoRA
  parameter: 16 bytes = bf16 weight 2 + bf16 gradient 2 + fp32 master 4 + AdamW fp32 m 4 + v 4
  (mixed-precision AdamW; a trainer that keeps LoRA in fp32 and skips the bf16 copy also needs 16).
  Sharded over the training GPUs (FSDP / ZeRO-3).
- **Training, per GPU with N GPUs** (FSDP2 / ZeRO-3 data parallel, frozen base):
  base weights / N + LoRA state / N
  + FSDP all-gather buffer: 2 x the largest decoder layer (the layer computed + the one
    prefetched), 0 when N = 1; with `train_weights="checkpoint"` at the checkpoint's average
    bytes per parameter (an approximation: a MoE layer is almost all INT4 experts)
  + routed-expert LoRA fold: PEFT `target_parameters` adapts a fused expert tensor by forming
    W + (alpha/r) B A, a new tensor the size of W that the expert matmul saves for backward, and
    its gradient in backward: with checkpointing 2 x the largest layer's adapted expert tensors,
    without it every MoE layer's adapted tensors + the largest layer's once more (0 without
    expert targets)
  + activations: micro_batch x seq_len x bytes per token (below) + logits
  must stay under utilization x GPU memory (utilization, default 0.9, leaves room for the CUDA
  context, NCCL buffers and allocator fragmentation).
- **Activation bytes per token** (bf16, 2 bytes per element; a memory-efficient attention kernel
  (SDPA / flash), so no seq_len^2 scores; no dropout), elements saved for backward per layer:
    attention, MLA: 2h (norm in/out) + 2 q_lora (q_a out, q norm out) + H d_qk (q_b out)
        + (c_kv + d_rope) (kv_a out) + c_kv (kv norm out) + H (d_nope + d_v) (kv_b out)
        + 2 H d_qk (q and k after RoPE) + H d_v (v) + H d_v (attention output)
        (q_lora_rank null: 2 q_lora is 0 and q_proj's output is H d_qk)
    attention, standard: 2h + (H d + 2 KV d) (q, k, v out) + (H d + KV d) (q, k after RoPE)
        + H d (attention output)
    dense MLP: 2h (norm in/out) + 3 I (gate out, up out, act(gate) * up)
    MoE MLP: 2h + 2E (fp32 router logits) + k (2h + 3 I_e) (per routed expert: its gathered input,
        gate/up/product, its output) + 3 I_shared
    LoRA: + r per adapted Linear module (the A output); folded expert adapters save nothing per token
  without checkpointing: the sum over all layers; with (per-layer) checkpointing: h per layer
  (the saved layer inputs) + the largest single layer, recomputed one at a time.
  Logits, per completion token: V x 18 bytes (bf16 logits 2 + fp32 copy 4 + fp32 /temperature 4
  + fp32 log-softmax 4 + fp32 gradient 4); the trainer keeps logits of completion tokens only.
- **Rollouts (vLLM)**: weights in the checkpoint format / (tp x pp) + KV cache, under
  utilization (vLLM's gpu_memory_utilization, default 0.9) x GPU memory. KV bytes per token:
  MLA caches the compressed latent, (c_kv + d_rope) x 2 bytes per layer, and every tensor-parallel
  rank holds all of it (the latent has no head dimension to split); standard attention caches
  2 x KV x d x 2 bytes per layer, split over min(tp, KV) ranks. tp is a power of two that divides
  the attention heads, at most one node; beyond a node pipeline stages (pp) split the layers.
  vLLM's own activation / CUDA-graph workspace (a few GiB) is not modelled: keep utilization honest.

Not modelled: expert parallelism (an all-to-all MoE layout would remove the full-layer all-gather
and fold), CPU offload, sequence/context parallelism, the reference-policy and old-policy forward
passes (no_grad: transient, smaller than the training pass), vision inputs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stateset_agents.models.lora_targets import resolve_lora_targets

__all__ = [
    "GIB",
    "LORA_STATE_BYTES",
    "LOGIT_BYTES",
    "Hardware",
    "LoraSetting",
    "ModelPlan",
    "PlanError",
    "Workload",
    "kv_cache_bytes_per_token",
    "activation_elements",
    "find_model_config",
    "read_model_config",
    "plan_model",
    "add_plan_arguments",
    "run_plan",
]

GIB = 2**30
BF16 = 2
LORA_STATE_BYTES = 16  # bf16 weight 2 + bf16 grad 2 + fp32 master 4 + fp32 m 4 + fp32 v 4
LOGIT_BYTES = 18  # per vocabulary entry per completion token: 2 + 4 + 4 + 4 + 4
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1}


class PlanError(ValueError):
    """A model config that cannot be found or planned; the message says what to do."""


@dataclass(frozen=True)
class LoraSetting:
    """The LoRA part of a TrainingConfig: rank, target names (None = auto), routed experts on/off."""

    r: int = 64
    targets: list[str] | None = None
    experts: bool = True

    @classmethod
    def from_training_config(cls, config) -> LoraSetting:
        return cls(r=config.lora_r, targets=config.lora_target_modules, experts=config.lora_target_experts)


@dataclass(frozen=True)
class Hardware:
    gpu_memory_gib: float
    gpus_per_node: int = 8
    utilization: float = 0.9


@dataclass(frozen=True)
class Workload:
    """Training micro-batch (episodes per GPU per forward/backward) and tokens per episode;
    rollout concurrency (sequences resident in the vLLM server) and their context length."""

    micro_batch: int = 1
    seq_len: int = 4096
    completion_len: int | None = None  # tokens whose logits are scored; None = seq_len (conservative)
    concurrency: int = 8
    context: int | None = None  # None = seq_len

    @property
    def scored_tokens(self) -> int:
        return self.completion_len if self.completion_len is not None else self.seq_len

    @property
    def rollout_context(self) -> int:
        return self.context if self.context is not None else self.seq_len


# --- finding and reading config.json ------------------------------------------------------------


def find_model_config(model: str) -> Path:
    """The config.json of `model`: a config.json file, a directory holding one, an embedded model
    name, or a hub id whose config is in the local Hugging Face cache (never downloaded)."""
    from stateset_agents.models.embedded_names import embedded_model_path, is_embedded

    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PlanError(f"{path} is a directory without a config.json")
        return path / "config.json"
    if is_embedded(model):
        return embedded_model_path(model) / "config.json"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(model, "config.json", local_files_only=True))
        except Exception as error:  # not cached (LocalEntryNotFoundError) or a bad repo id
            raise PlanError(
                f"the config.json of {model!r} is not in the local Hugging Face cache ({type(error).__name__}); "
                f"fetch it with `hf download {model} config.json` or pass --model path/to/config.json "
                f"(the real Kimi-K2.5 config is in tests/fixtures/kimi-k2.5-config.json)"
            ) from None
    raise PlanError(f"{model!r} is not a config.json file, a directory holding one, an embedded model, or a hub id")


def read_model_config(model: str) -> dict[str, Any]:
    path = find_model_config(model)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PlanError(f"{path} is not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise PlanError(f"{path} is not a model config.json (no model_type)")
    return raw


def _meta_model(raw: dict[str, Any]) -> nn.Module:
    """The model of `raw` on the meta device (no memory, no weights); quantization_config removed
    (it changes storage, not the module tree)."""
    import transformers

    # auto_map points at the checkpoint's own code: the transformers class is used instead (and
    # AutoConfig would otherwise stop to ask about trust_remote_code)
    values = {k: v for k, v in raw.items() if k not in ("quantization_config", "auto_map")}
    try:
        config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    except (KeyError, ValueError) as error:
        raise PlanError(f"transformers {transformers.__version__} does not know this model type: {error}") from None
    for auto in ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModel"):
        factory = getattr(transformers, auto)
        if type(config) in factory._model_mapping:  # a cheap lookup (a failed from_config imports every model)
            with torch.device("meta"):
                return factory.from_config(config)
    raise PlanError(f"no transformers model class for model_type {raw['model_type']!r}")


# --- formulas ---------------------------------------------------------------------------------


def _text_config(raw: dict[str, Any]) -> dict[str, Any]:
    return raw.get("text_config") or raw


def _is_mla(text: dict[str, Any]) -> bool:
    return text.get("kv_lora_rank") is not None


def kv_cache_bytes_per_token(text: dict[str, Any], bytes_per_element: int = BF16) -> dict[str, Any]:
    """KV-cache bytes per token over all layers, and whether tensor parallelism splits it."""
    layers = text["num_hidden_layers"]
    if _is_mla(text):
        per_layer = (text["kv_lora_rank"] + text["qk_rope_head_dim"]) * bytes_per_element
        formula = (f"{layers} layers x (kv_lora_rank {text['kv_lora_rank']} + qk_rope_head_dim "
                   f"{text['qk_rope_head_dim']}) x {bytes_per_element} B")
        return {"bytes": layers * per_layer, "formula": formula, "split_by_tp": False, "kv_heads": 1}
    heads = text["num_attention_heads"]
    kv = text.get("num_key_value_heads") or heads
    d = text.get("head_dim") or text["hidden_size"] // heads
    formula = f"{layers} layers x 2 (K, V) x {kv} kv heads x head_dim {d} x {bytes_per_element} B"
    return {"bytes": layers * 2 * kv * d * bytes_per_element, "formula": formula, "split_by_tp": True, "kv_heads": kv}


def activation_elements(text: dict[str, Any], moe: bool) -> dict[str, int]:
    """Elements saved for backward per token by one layer (attention and MLP parts), by the
    module docstring's formula."""
    h, heads = text["hidden_size"], text["num_attention_heads"]
    if _is_mla(text):
        q_lora = text.get("q_lora_rank") or 0
        c, rope, nope, dv = text["kv_lora_rank"], text["qk_rope_head_dim"], text["qk_nope_head_dim"], text["v_head_dim"]
        d_qk = nope + rope
        attention = (2 * h + 2 * q_lora + heads * d_qk + (c + rope) + c + heads * (nope + dv)
                     + 2 * heads * d_qk + heads * dv + heads * dv)
    else:
        kv = text.get("num_key_value_heads") or heads
        d = text.get("head_dim") or h // heads
        attention = 2 * h + (heads * d + 2 * kv * d) + (heads * d + kv * d) + heads * d
    if moe:
        experts = _n_experts(text)
        k, inter = text["num_experts_per_tok"], _expert_intermediate(text)
        mlp = 2 * h + 2 * experts + k * (2 * h + 3 * inter) + 3 * _shared_intermediate(text)
    else:
        mlp = 2 * h + 3 * text["intermediate_size"]
    return {"attention": attention, "mlp": mlp}


def _n_experts(text: dict[str, Any]) -> int:
    return text.get("n_routed_experts") or text.get("num_local_experts") or text.get("num_experts") or 0


def _expert_intermediate(text: dict[str, Any]) -> int:
    return text.get("moe_intermediate_size") or text["intermediate_size"]


def _shared_intermediate(text: dict[str, Any]) -> int:
    if text.get("n_shared_experts"):
        return text["n_shared_experts"] * _expert_intermediate(text)
    return text.get("shared_expert_intermediate_size") or 0


# --- quantisation (compressed-tensors) ----------------------------------------------------------


def _ignored(name: str, ignore: list[str]) -> bool:
    for entry in ignore:
        if entry.startswith("re:"):
            if re.match(entry[3:], name):
                return True
        elif name == entry or name.endswith("." + entry):
            return True
    return False


def _quantised_bytes(numel: int, rows: int, cols: int, modules: int, scheme: dict[str, Any], scale_bytes: int) -> int:
    """Bytes of `modules` packed Linear weights totalling `numel` weights (rows x cols each module)."""
    bits = scheme["num_bits"]
    if scheme.get("strategy") == "group":
        scales = numel // scheme["group_size"] if cols % scheme["group_size"] == 0 else \
            modules * rows * math.ceil(cols / scheme["group_size"])
    elif scheme.get("strategy") == "channel":
        scales = modules * rows
    else:  # tensor
        scales = modules
    zero_points = 0 if scheme.get("symmetric", True) else scales
    return numel * bits // 8 + (scales + zero_points) * scale_bytes + modules * 8


@dataclass
class _Storage:
    method: str
    bytes: int
    quantised_params: int
    quantised_bytes: int
    other_params: int
    other_bytes: int
    details: list[str] = field(default_factory=list)


def _checkpoint_storage(model: nn.Module, raw: dict[str, Any], scope: str) -> _Storage:
    dtype = raw.get("dtype") or raw.get("torch_dtype") or _text_config(raw).get("dtype") or "bfloat16"
    dtype_bytes = _DTYPE_BYTES.get(str(dtype), BF16)
    total = sum(p.numel() for p in model.parameters())
    quant = raw.get("quantization_config")
    if not quant:
        return _Storage(f"{dtype} (no quantization_config)", total * dtype_bytes, 0, 0, total, total * dtype_bytes)
    if quant.get("quant_method") != "compressed-tensors":
        return _Storage(f"{dtype}: quant_method {quant.get('quant_method')!r} not modelled, counted as {dtype}",
                        total * dtype_bytes, 0, 0, total, total * dtype_bytes)
    ignore = list(quant.get("ignore") or [])
    groups = list((quant.get("config_groups") or {}).values())
    scheme = next((g["weights"] for g in groups if "Linear" in g.get("targets", []) and g.get("weights")), None)
    if scheme is None:
        return _Storage(f"{dtype}: no Linear weight scheme in quantization_config", total * dtype_bytes,
                        0, 0, total, total * dtype_bytes)
    q_params = q_bytes = 0
    for name, module in model.named_modules():
        in_scope = not scope or name.startswith(scope + ".") or name == scope
        if not in_scope or _ignored(name, ignore):
            continue
        if type(module).__name__ == "Linear":
            rows, cols = module.weight.shape
            q_params += module.weight.numel()
            q_bytes += _quantised_bytes(module.weight.numel(), rows, cols, 1, scheme, dtype_bytes)
        for pname, param in module.named_parameters(recurse=False):
            if param.dim() == 3 and (name.rsplit(".", 1)[-1] == "experts" or type(module).__name__.endswith("Experts")):
                if _ignored(f"{name}.{pname}", ignore):
                    continue
                experts, rows, cols = param.shape
                # gate_up_proj stores gate_proj and up_proj: 2 modules per expert
                per_expert = 2 if pname == "gate_up_proj" else 1
                q_params += param.numel()
                q_bytes += _quantised_bytes(param.numel(), rows // per_expert, cols, experts * per_expert,
                                            scheme, dtype_bytes)
    other = total - q_params
    method = (f"compressed-tensors {quant.get('format', '')}: int{scheme['num_bits']} "
              f"{scheme.get('strategy')} (group_size {scheme.get('group_size')}, "
              f"{'symmetric' if scheme.get('symmetric', True) else 'asymmetric'}), {dtype} scales; "
              f"ignore {ignore}; the rest {dtype}")
    return _Storage(method, q_bytes + other * dtype_bytes, q_params, q_bytes, other, other * dtype_bytes)


# --- the plan ---------------------------------------------------------------------------------


@dataclass
class ModelPlan:
    """Every number of a plan (bytes unless named otherwise) and the lines that show the arithmetic."""

    model: str
    total_params: int
    text_params: int
    active_params: int
    vision_params: int
    routed_expert_params: int
    num_experts: int
    experts_per_token: int
    bf16_weight_bytes: int
    checkpoint_format: str
    checkpoint_weight_bytes: int
    quantised_params: int
    lora: dict[str, Any]
    activations: dict[str, Any]
    kv_cache: dict[str, Any]
    training: dict[str, Any]
    rollout: dict[str, Any]
    hardware: dict[str, Any]
    workload: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        return "\n".join(self.lines)


def _gib(value: float) -> str:
    """Bytes in GiB (MiB or KiB for small models)."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20)):
        if abs(value) >= 0.1 * size:
            return f"{value / size:,.1f} {unit}"
    return f"{value / 2**10:,.1f} KiB"


def _b(value: float) -> str:
    return f"{value / 1e9:,.2f}B"


def _decoder_layers(model: nn.Module, scope: str) -> list[nn.Module]:
    lists = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] == "layers"
             and (not scope or n.startswith(scope + "."))]
    if not lists:
        raise PlanError("found no decoder `layers` list in the model")
    return list(min(lists, key=lambda item: item[0].count("."))[1])


def _expert_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    found = []
    for name, sub in module.named_modules():
        if name.rsplit(".", 1)[-1] == "experts" or type(sub).__name__.endswith("Experts"):
            found += [(f"{name}.{p}", t) for p, t in sub.named_parameters(recurse=False) if t.dim() == 3]
    return found


def plan_model(raw: dict[str, Any], lora: LoraSetting, hardware: Hardware, workload: Workload,
               name: str = "model", train_weights: str = "bf16", model: nn.Module | None = None) -> ModelPlan:
    """The plan for the model of config.json `raw` (see the module docstring for every formula).
    `train_weights`: "bf16" (the frozen base held in bf16 while training) or "checkpoint" (in the
    checkpoint's own format; impossible with routed-expert adapters, which fold into float weights).
    `model`: the model of `raw` already built (on the meta device), to plan several settings at once."""
    if train_weights not in ("bf16", "checkpoint"):
        raise PlanError(f"train_weights must be 'bf16' or 'checkpoint', not {train_weights!r}")
    text = _text_config(raw)
    model = _meta_model(raw) if model is None else model
    target_plan = resolve_lora_targets(model, lora.targets, include_experts=lora.experts)
    scope = target_plan.scope
    layers = _decoder_layers(model, scope)
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    head_names = {n for n, m in model.named_modules() if m is model.get_output_embeddings()} if hasattr(
        model, "get_output_embeddings") else set()
    text_params = sum(p.numel() for n, p in params.items()
                      if not scope or n.startswith(scope + ".") or n.rsplit(".", 1)[0] in head_names)
    vision = total - text_params
    n_experts, k = _n_experts(text), text.get("num_experts_per_tok") or 0
    expert_tensors = [t for layer in layers for _, t in _expert_tensors(layer)]
    routed = sum(t.numel() for t in expert_tensors)
    inactive = routed * (n_experts - k) // n_experts if n_experts else 0
    active = text_params - inactive
    storage = _checkpoint_storage(model, raw, scope)
    bf16_bytes = total * BF16

    lines = [f"Plan for {name}  ({raw.get('model_type')}, text {text.get('model_type', raw.get('model_type'))}; "
             f"{'MLA' if _is_mla(text) else 'standard'} attention, "
             f"{f'{n_experts} routed experts, {k} per token' if n_experts else 'dense'})", ""]
    lines += ["Parameters"]
    lines.append(f"  total              {total:>20,}  ({_b(total)})")
    if vision:
        lines.append(f"    language model   {text_params:>20,}   vision tower + projector {vision:,}")
    if n_experts:
        lines.append(f"  routed experts     {routed:>20,}  = {len(expert_tensors)} fused tensors")
        lines.append(f"  active per token   {active:>20,}  ({_b(active)}) = language model {text_params:,} "
                     f"- routed {routed:,} x ({n_experts} - {k}) / {n_experts}")
    else:
        lines.append(f"  active per token   {active:>20,}  ({_b(active)}) = language model (dense)")

    lines += ["", "Weights"]
    lines.append(f"  bf16               {_gib(bf16_bytes):>14} = {total:,} x 2 B")
    lines.append(f"  checkpoint format  {_gib(storage.bytes):>14} = quantised {storage.quantised_params:,} params "
                 f"-> {_gib(storage.quantised_bytes)} + other {storage.other_params:,} -> {_gib(storage.other_bytes)}")
    lines.append(f"    format: {storage.method}")

    # LoRA
    lora_params = target_plan.lora_parameter_count(lora.r)
    lora_state = lora_params * LORA_STATE_BYTES
    lora_info = {"r": lora.r, "targets": lora.targets or "auto", "experts": lora.experts,
                 "target_modules": len(target_plan.target_modules),
                 "target_expert_tensors": len(target_plan.target_parameters),
                 "parameters": lora_params, "state_bytes": lora_state, "notes": list(target_plan.notes)}
    lines += ["", f"LoRA r={lora.r}, targets {lora.targets or 'auto'}, "
                  f"routed experts {'on' if lora.experts else 'off'}"]
    lines.append(f"  resolved           {len(target_plan.target_modules)} Linear modules + "
                 f"{len(target_plan.target_parameters)} fused expert tensors")
    lines.append(f"  parameters         {lora_params:>20,}  ({_b(lora_params)})")
    lines.append(f"  training state     {_gib(lora_state):>14} = {lora_params:,} x {LORA_STATE_BYTES} B "
                 f"(bf16 weight 2 + bf16 grad 2 + fp32 master 4 + AdamW fp32 m 4 + v 4)")

    # activations
    moe_flags = [bool(_expert_tensors(layer)) for layer in layers]
    per_kind = {moe: activation_elements(text, moe) for moe in set(moe_flags)}
    module_names = {id(m): n for n, m in model.named_modules()}
    layer_names = [module_names[id(layer)] for layer in layers]
    modules_per_layer = [sum(t.startswith(prefix + ".") for t in target_plan.target_modules) for prefix in layer_names]
    layer_elements = [per_kind[moe]["attention"] + per_kind[moe]["mlp"] + lora.r * modules_per_layer[i]
                      for i, moe in enumerate(moe_flags)]
    h, vocab = text["hidden_size"], text["vocab_size"]
    no_ckpt = sum(layer_elements) * BF16
    with_ckpt = (len(layers) * h + max(layer_elements)) * BF16
    logits_per_token = vocab * LOGIT_BYTES
    n_moe = sum(moe_flags)
    activations = {"bytes_per_token_no_checkpointing": no_ckpt, "bytes_per_token_checkpointing": with_ckpt,
                   "logit_bytes_per_completion_token": logits_per_token,
                   "elements_per_layer": {("moe" if moe else "dense"): v for moe, v in per_kind.items()},
                   "lora_modules_per_layer_max": max(modules_per_layer)}
    lines += ["", "Activations per token (bf16; SDPA/flash attention, no dropout; formula in training/plan.py)"]
    for moe, parts in sorted(per_kind.items()):
        count = n_moe if moe else len(layers) - n_moe
        lines.append(f"  {'MoE' if moe else 'dense'} layer x{count}: attention {parts['attention']:,} + "
                     f"{'MoE' if moe else 'MLP'} {parts['mlp']:,} elements")
    lines.append(f"  LoRA A outputs: r {lora.r} x {len(target_plan.target_modules)} adapted modules = "
                 f"{lora.r * len(target_plan.target_modules):,} elements")
    lines.append(f"  no checkpointing   {no_ckpt:>14,} B = {sum(layer_elements):,} elements x 2 B  "
                 f"({no_ckpt / 2**20:,.2f} MiB)")
    lines.append(f"  checkpointing      {with_ckpt:>14,} B = ({len(layers)} layers x h {h} + largest layer "
                 f"{max(layer_elements):,}) x 2 B  ({with_ckpt / 2**20:,.2f} MiB)")
    lines.append(f"  logits             {logits_per_token:>14,} B per completion token = vocab {vocab:,} x "
                 f"{LOGIT_BYTES} B")

    # KV cache
    kv = kv_cache_bytes_per_token(text)
    lines += ["", "KV cache per token (rollouts, bf16)"]
    lines.append(f"  {kv['bytes']:,} B = {kv['formula']}"
                 + ("  (MLA latent: every TP rank holds all of it)" if not kv["split_by_tp"] else ""))
    if _is_mla(text):
        full = text["num_hidden_layers"] * text["num_attention_heads"] * (
            text["qk_nope_head_dim"] + text["qk_rope_head_dim"] + text["v_head_dim"]) * BF16
        lines.append(f"  (full per-head K and V would be {full:,} B: {full / kv['bytes']:.1f}x more)")
        kv["full_kv_bytes"] = full

    # training verdict
    if train_weights == "checkpoint" and target_plan.target_parameters:
        raise PlanError("train_weights='checkpoint' with routed-expert adapters: PEFT folds W + BA into the expert "
                        "tensors, which needs float weights; use bf16 or turn experts off")
    base = bf16_bytes if train_weights == "bf16" else storage.bytes
    bytes_per_param = base / total
    largest_layer = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    gather = round(2 * largest_layer * bytes_per_param)
    adapted = set(target_plan.target_parameters)
    adapted_by_layer = []
    for layer, prefix in zip(layers, layer_names):
        adapted_by_layer.append(sum(t.numel() for n, t in _expert_tensors(layer) if f"{prefix}.{n}" in adapted) * BF16)
    fold_ckpt = 2 * max(adapted_by_layer)
    fold_no_ckpt = sum(adapted_by_layer) + max(adapted_by_layer)
    usable = hardware.utilization * hardware.gpu_memory_gib * GIB
    tokens = workload.micro_batch * workload.seq_len
    logits = workload.micro_batch * workload.scored_tokens * logits_per_token
    lines += ["", f"Training: {hardware.gpu_memory_gib:g} GiB GPUs x {hardware.utilization:g} usable = {_gib(usable)}; "
                  f"micro-batch {workload.micro_batch} x {workload.seq_len} tokens "
                  f"({workload.scored_tokens} scored); frozen base in {train_weights}, FSDP/ZeRO-3 sharded"]
    lines.append(f"  sharded:   base {_gib(base)} + LoRA state {_gib(lora_state)} = {_gib(base + lora_state)}, / N")
    training: dict[str, Any] = {"train_weights": train_weights, "base_bytes": base, "lora_state_bytes": lora_state,
                                "gather_bytes": gather, "largest_layer_params": largest_layer,
                                "usable_bytes_per_gpu": usable}
    for ckpt in (True, False):
        key = "checkpointing" if ckpt else "no_checkpointing"
        act = tokens * (with_ckpt if ckpt else no_ckpt)
        fold = fold_ckpt if ckpt else fold_no_ckpt
        fixed_one = fold + act + logits
        fixed = gather + fixed_one
        lines.append(f"  {'with' if ckpt else 'without'} gradient checkpointing:")
        lines.append(f"    per GPU, not sharded: all-gather 2 x largest layer {largest_layer:,} params x "
                     f"{bytes_per_param:.3g} B = {_gib(gather)}")
        if fold:
            lines.append(f"      + expert LoRA fold {_gib(fold)} (" + (
                "2 x largest layer's adapted expert tensors, bf16" if ckpt else
                f"{n_moe} MoE layers' adapted expert tensors + 1 more, bf16") + ")")
        lines.append(f"      + activations {tokens:,} tokens x {(with_ckpt if ckpt else no_ckpt):,} B = {_gib(act)}")
        lines.append(f"      + logits {workload.micro_batch * workload.scored_tokens:,} tokens x "
                     f"{logits_per_token:,} B = {_gib(logits)}")
        lines.append(f"      = {_gib(fixed)}")
        if base + lora_state + fixed_one <= usable:
            gpus = 1
            lines.append(f"    N = 1: {_gib(base + lora_state)} + {_gib(fixed_one)} (no all-gather) "
                         f"<= {_gib(usable)}")
        elif fixed >= usable:
            gpus = None
            lines.append(f"    does not fit at any N: the unsharded part {_gib(fixed)} >= {_gib(usable)} per GPU")
        else:
            gpus = math.ceil((base + lora_state) / (usable - fixed))
            lines.append(f"    N = ceil({_gib(base + lora_state)} / ({_gib(usable)} - {_gib(fixed)})) = {gpus} GPUs "
                         f"= {math.ceil(gpus / hardware.gpus_per_node)} node(s) of {hardware.gpus_per_node}; "
                         f"per GPU {_gib((base + lora_state) / gpus + fixed)}")
        training[key] = {"activation_bytes": act, "logit_bytes": logits, "fold_bytes": fold,
                         "fixed_bytes_per_gpu": fixed, "gpus": gpus,
                         "nodes": math.ceil(gpus / hardware.gpus_per_node) if gpus else None}

    # rollout verdict
    context, concurrency = workload.rollout_context, workload.concurrency
    kv_total = concurrency * context * kv["bytes"]
    heads, n_layers = text["num_attention_heads"], text["num_hidden_layers"]
    weights = storage.bytes
    lines += ["", f"Rollouts (vLLM): weights in the checkpoint format {_gib(weights)}; KV {concurrency} sequences x "
                  f"{context:,} tokens x {kv['bytes']:,} B = {_gib(kv_total)}; usable {_gib(usable)} per GPU"]
    rollout: dict[str, Any] = {"weight_bytes": weights, "kv_bytes": kv_total, "tp": None, "pp": None}
    tps = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= hardware.gpus_per_node and heads % t == 0]

    def per_gpu(tp: int, pp: int) -> float:
        kv_share = kv_total / pp / (min(tp, kv["kv_heads"]) if kv["split_by_tp"] else 1)
        return weights / (tp * pp) + kv_share

    for tp in tps:
        fits = per_gpu(tp, 1) <= usable
        lines.append(f"  -tp {tp}: {_gib(weights)} / {tp} + KV {_gib(per_gpu(tp, 1) - weights / tp)} = "
                     f"{_gib(per_gpu(tp, 1))} {'<=' if fits else '>'} {_gib(usable)}")
        if fits:
            rollout.update(tp=tp, pp=1, bytes_per_gpu=per_gpu(tp, 1))
            break
    else:
        tp = tps[-1]
        pp = next((p for p in range(2, n_layers + 1) if per_gpu(tp, p) <= usable), None)
        if pp is not None:
            lines.append(f"  -tp {tp} -pp {pp}: ({_gib(weights)} + KV) / ... = {_gib(per_gpu(tp, pp))} per GPU "
                         f"<= {_gib(usable)}")
            rollout.update(tp=tp, pp=pp, bytes_per_gpu=per_gpu(tp, pp))
    if rollout["tp"]:
        rollout["gpus"] = rollout["tp"] * rollout["pp"]
        served = str(Path(name).parent) if name.endswith(".json") else name
        rollout["command"] = f"vllm serve {served} -tp {rollout['tp']}" + (
            f" -pp {rollout['pp']}" if rollout["pp"] > 1 else "") + f" --max-model-len {context}"
        free = usable - rollout["bytes_per_gpu"]
        per_seq = context * kv["bytes"] / rollout["pp"] / (
            min(rollout["tp"], kv["kv_heads"]) if kv["split_by_tp"] else 1)
        rollout["max_concurrency_at_context"] = concurrency + int(free // per_seq)
        lines.append(f"  room left per GPU {_gib(free)}: about {rollout['max_concurrency_at_context']} sequences of "
                     f"{context:,} tokens fit")

    lines += ["", "Verdict"]
    for key, label in (("checkpointing", "with gradient checkpointing"), ("no_checkpointing", "without")):
        gpus = training[key]["gpus"]
        lines.append(f"  training ({label}): " + (
            f"{gpus} x {hardware.gpu_memory_gib:g} GiB GPUs ({training[key]['nodes']} node(s) of "
            f"{hardware.gpus_per_node})" if gpus else "does not fit on GPUs of this size (see above)"))
    lines.append("  rollout server: " + (f"{rollout['gpus']} GPUs: {rollout['command']}" if rollout["tp"] else
                                         "does not fit on GPUs of this size"))
    if not training["checkpointing"]["gpus"] and target_plan.target_parameters:
        lines.append("  hint: routed-expert LoRA folds a full layer of expert weights per step; try "
                     "lora_target_experts=False (--no-lora-experts)")
    lines += [f"  note: {note}" for note in target_plan.notes]

    return ModelPlan(
        model=name, total_params=total, text_params=text_params, active_params=active, vision_params=vision,
        routed_expert_params=routed, num_experts=n_experts, experts_per_token=k, bf16_weight_bytes=bf16_bytes,
        checkpoint_format=storage.method, checkpoint_weight_bytes=storage.bytes,
        quantised_params=storage.quantised_params, lora=lora_info, activations=activations, kv_cache=kv,
        training=training, rollout=rollout, hardware=asdict(hardware),
        workload={**asdict(workload), "scored_tokens": workload.scored_tokens, "context": context}, lines=lines,
    )


# --- command line (`stateset-agents plan`) ------------------------------------------------------


def add_plan_arguments(parser) -> None:
    """Flags of `stateset-agents plan`. LoRA defaults: --config's TrainingConfig, else the Kimi-K2.5 preset."""
    parser.add_argument("--model", default="moonshotai/Kimi-K2.5",
                        help="a config.json file, a directory holding one, an embedded model, or a hub id whose "
                             "config.json is in the local Hugging Face cache (default moonshotai/Kimi-K2.5)")
    parser.add_argument("--config", default=None, help="a TrainingConfig YAML/JSON: LoRA settings and micro-batch")
    parser.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: the config's, else 64)")
    parser.add_argument("--lora-targets", default=None,
                        help="comma-separated target names, or 'auto' (default: the config's, else auto)")
    parser.add_argument("--no-lora-experts", action="store_true", help="do not adapt routed experts")
    parser.add_argument("--gpu-memory", type=float, default=141.0, help="memory per GPU in GiB (default 141)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--utilization", type=float, default=0.9,
                        help="fraction of GPU memory a process may fill (vLLM's gpu_memory_utilization; default 0.9)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="episodes per GPU per forward/backward (default: per_device_train_batch_size)")
    parser.add_argument("--seq-len", type=int, default=4096, help="tokens per training episode (default 4096)")
    parser.add_argument("--completion-len", type=int, default=None,
                        help="scored (completion) tokens per episode, whose logits are kept (default: --seq-len)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="sequences resident in the rollout server (default: rollout_concurrency)")
    parser.add_argument("--context", type=int, default=None, help="rollout context length (default: --seq-len)")
    parser.add_argument("--train-weights", choices=["bf16", "checkpoint"], default="bf16",
                        help="the frozen base during training: bf16, or the checkpoint's own format (only without "
                             "routed-expert adapters)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run_plan(args) -> str:
    """The rendered plan (or its JSON) for parsed `plan` arguments. Raises PlanError / ValueError."""
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.kimi25_config import KIMI25_PRESET

    if args.config:
        config = TrainingConfig.from_file(args.config)
    else:
        config = TrainingConfig.model_construct(**{k: v for k, v in KIMI25_PRESET.items()
                                                   if k in ("lora_r", "per_device_train_batch_size")})
    lora = LoraSetting.from_training_config(config)
    targets = lora.targets
    if args.lora_targets is not None:
        names = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        targets = None if args.lora_targets == "auto" else names
    lora = LoraSetting(r=args.lora_r or lora.r, targets=targets, experts=lora.experts and not args.no_lora_experts)
    for flag in ("gpu_memory", "gpus_per_node", "micro_batch", "seq_len", "completion_len", "concurrency", "context"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise PlanError(f"--{flag.replace('_', '-')} must be positive, not {value}")
    if not 0 < args.utilization <= 1:
        raise PlanError(f"--utilization must be in (0, 1], not {args.utilization}")
    hardware = Hardware(args.gpu_memory, args.gpus_per_node, args.utilization)
    workload = Workload(micro_batch=args.micro_batch or config.per_device_train_batch_size, seq_len=args.seq_len,
                        completion_len=args.completion_len, concurrency=args.concurrency or config.rollout_concurrency,
                        context=args.context)
    plan = plan_model(read_model_config(args.model), lora, hardware, workload, name=args.model,
                      train_weights=args.train_weights)
    return json.dumps(plan.to_dict(), indent=2) if args.json else plan.render()
