"""The vLLM-ready export (`models.export`): public DeepSeek-V3 layout, routing config, LoRA merged.

Each export is loaded back by transformers as a plain `DeepseekV3ForCausalLM` and must give the
original model's text logits: to 1e-5 (atol, fp32) without LoRA (measured: bitwise equal), and
with a merged adapter (measured ~1e-6: `(W + sBA) x` rounds differently from `W x + s B (A x)`).
The routing bias is randomised first, so a dropped or misplaced `e_score_correction_bias`, a
swapped gate/up split or a mis-numbered expert changes the logits. That the same export serves
identically in vLLM is tests/test_vllm_server.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from stateset_agents.models.export import PUBLIC_KEY, ExportError, export_for_vllm, public_text_state
from stateset_agents.models.loading import LoadSettings, load_model

ATOL = 1e-5


@pytest.fixture()
def kimi(tiny_model_dir):
    """A fresh (mutable) copy of the base tiny model with a nonzero routing bias."""
    loaded = load_model(str(tiny_model_dir), LoadSettings(device="cpu", dtype="float32"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buffer in loaded.model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return loaded


def text_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def reload(directory):
    from transformers import DeepseekV3ForCausalLM

    return DeepseekV3ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


IDS = torch.tensor([[5, 17, 300, 42, 999, 7, 1200, 64, 8, 2000, 33, 1500], [9, 9, 400, 401, 402, 10, 11, 12, 2500, 6, 7, 8]])


def test_export_reloads_as_deepseek_v3_with_the_same_logits(kimi, tmp_path):
    out = export_for_vllm(kimi.model, kimi.tokenizer, tmp_path / "export")
    reloaded = reload(out)
    assert type(reloaded).__name__ == "DeepseekV3ForCausalLM"
    torch.testing.assert_close(text_logits(reloaded, IDS), text_logits(kimi.model, IDS), rtol=0, atol=ATOL)
    # the bias is exported, not re-initialised to zeros
    biases = [b for n, b in reloaded.named_buffers() if n.endswith("e_score_correction_bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases)


def test_export_writes_the_public_layout_and_vllm_routing_config(kimi, tmp_path):
    from safetensors import safe_open

    out = export_for_vllm(kimi.model, kimi.tokenizer, tmp_path / "export")
    text = kimi.model.config.text_config
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
        experts = [k for k in keys if ".mlp.experts." in k]
        moe_layers = text.num_hidden_layers - text.first_k_dense_replace
        assert len(experts) == moe_layers * text.n_routed_experts * 3
        first = text.first_k_dense_replace
        assert handle.get_slice(f"model.layers.{first}.mlp.experts.7.gate_proj.weight").get_shape() == \
            [text.moe_intermediate_size, text.hidden_size]
        assert handle.get_slice(f"model.layers.{first}.mlp.experts.7.down_proj.weight").get_shape() == \
            [text.hidden_size, text.moe_intermediate_size]
    assert all(PUBLIC_KEY.fullmatch(k) for k in keys), sorted(k for k in keys if not PUBLIC_KEY.fullmatch(k))
    assert not any("vision" in k or "blocks" in k or "language_model" in k for k in keys)
    assert f"model.layers.{first}.mlp.gate.e_score_correction_bias" in keys
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DeepseekV3ForCausalLM"] and config["model_type"] == "deepseek_v3"
    assert (config["topk_method"], config["scoring_func"]) == ("noaux_tc", "sigmoid")
    assert config["num_nextn_predict_layers"] == 0
    for field in ("n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "kv_lora_rank",
                  "qk_rope_head_dim", "rope_parameters", "first_k_dense_replace", "n_routed_experts"):
        assert config[field] == getattr(text, field), field
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"} <= \
        {p.name for p in out.iterdir()}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Where is order T916?"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        kimi.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def lora_model(kimi):
    """PEFT LoRA on every attention/MLP projection and the fused routed experts, B randomised (B=0 at init
    would make the merge a no-op)."""
    from peft import get_peft_model

    from stateset_agents.models.lora_targets import resolve_lora_targets

    plan = resolve_lora_targets(kimi.model, None, include_experts=True)
    assert plan.target_parameters, "the tiny model's routed experts must be LoRA targets"
    model = get_peft_model(kimi.model, plan.build_lora_config(r=4, alpha=8))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def test_export_merges_lora_including_fused_expert_adapters(kimi, tmp_path):
    base = text_logits(kimi.model, IDS)
    model = lora_model(kimi)
    adapted = text_logits(model, IDS)
    before = {n: p.clone() for n, p in model.named_parameters()}
    reloaded = reload(export_for_vllm(model, kimi.tokenizer, tmp_path / "merged"))
    merged = text_logits(reloaded, IDS)
    assert (adapted - base).abs().max() > 1e-2, "the adapter must change the model for this test to mean anything"
    torch.testing.assert_close(merged, adapted, rtol=0, atol=ATOL)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "export modified the model"
    # the expert adapters are in: merging only the Linear adapters gives other logits
    expert_wrappers = [m for m in model.modules() if type(m).__name__ == "ParamWrapper"]
    assert expert_wrappers
    for wrapper in expert_wrappers:
        wrapper.enable_adapters(False)
    try:
        partial = public_text_state(model)
    finally:
        for wrapper in expert_wrappers:
            wrapper.enable_adapters(True)
    full = public_text_state(model)
    expert_keys = [k for k in full if ".mlp.experts." in k]
    assert any(not torch.equal(full[k], partial[k]) for k in expert_keys)
    with model.disable_adapter():
        plain = reload(export_for_vllm(model, kimi.tokenizer, tmp_path / "disabled"))
    torch.testing.assert_close(text_logits(plain, IDS), base, rtol=0, atol=ATOL)


def test_export_refuses_a_model_that_is_not_deepseek_v3(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ExportError, match="model_type='llama'"):
        export_for_vllm(model, None, tmp_path / "llama")
    assert not (tmp_path / "llama").exists(), "nothing is written for a model that cannot be exported"
