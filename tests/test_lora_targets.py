"""LoRA target resolution against real architectures: Kimi-K2.5 (meta + tiny), DeepSeek-V3, Llama, GPT-2."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import peft
import pytest
import torch
import transformers

from stateset_agents.models.lora_targets import (
    LoraTargetError,
    resolve_lora_targets,
    target_kind,
    trainable_parameter_report,
)

GUIDE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KIMI_CONFIG = Path(__file__).parent / "fixtures" / "kimi-k2.5-config.json"  # the public checkpoint's config
MLA_ATTENTION = {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}

TINY_TEXT = dict(
    model_type="deepseek_v3", vocab_size=256, hidden_size=64, num_hidden_layers=2, first_k_dense_replace=1,
    num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2,
    n_shared_experts=1, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
    v_head_dim=16, moe_intermediate_size=32, intermediate_size=128, n_group=1, topk_group=1,
    tie_word_embeddings=False,
)  # fmt: skip
TINY_VISION = dict(
    patch_size=14, num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
    pos_emb_height=16, pos_emb_width=16,
)  # fmt: skip


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _real_kimi_config(**text_overrides) -> transformers.Kimi_K25Config:
    raw = json.loads(KIMI_CONFIG.read_text())
    raw.pop("quantization_config")  # INT4 compressed-tensors: not needed to build the module tree
    raw["text_config"].update(text_overrides)
    return transformers.Kimi_K25Config.from_dict(raw)


@pytest.fixture(scope="module")
def kimi_meta():
    with torch.device("meta"):
        return transformers.Kimi_K25ForConditionalGeneration(_real_kimi_config())


@pytest.fixture
def tiny_kimi():
    torch.manual_seed(0)
    config = transformers.Kimi_K25Config(
        text_config=dict(TINY_TEXT), vision_config=TINY_VISION, projection_hidden_size=32, tie_word_embeddings=False
    )
    return transformers.Kimi_K25ForConditionalGeneration(config)


def test_real_kimi_k25_meta_resolves_guide_list_to_mla_mlp_and_experts(kimi_meta):
    assert sum(p.numel() for p in kimi_meta.parameters()) / 1e9 == pytest.approx(1026.9, abs=0.05)
    plan = resolve_lora_targets(kimi_meta, GUIDE_TARGETS)

    assert plan.architecture == "mla" and plan.scope == "model.language_model"
    assert all(n.startswith("model.language_model.layers.") for n in plan.target_modules + plan.target_parameters)
    assert not any("vision" in n for n in plan.target_modules)
    kinds = {_leaf(n) for n in plan.target_modules}
    assert kinds == MLA_ATTENTION | {"gate_proj", "up_proj", "down_proj"}
    # 61 layers x 5 attention + layer 0 dense MLP (3) + 60 shared-expert MLPs (3 each)
    assert len(plan.target_modules) == 61 * 5 + 3 + 60 * 3
    assert sum(".shared_experts." in n for n in plan.target_modules) == 180
    assert len(plan.target_parameters) == 120  # gate_up_proj + down_proj on 60 MoE layers
    assert {_leaf(n) for n in plan.matches["q_proj"]} == {"q_a_proj", "q_b_proj"}
    assert {_leaf(n) for n in plan.matches["k_proj"]} == {"kv_a_proj_with_mqa", "kv_b_proj"}
    summary = plan.describe(r=64)
    assert "q_proj -> self_attn.q_a_proj x61, self_attn.q_b_proj x61" in summary
    assert "mlp.experts.gate_up_proj x60" in summary


def test_vision_names_alone_fail_on_the_wrapper_and_say_why(kimi_meta):
    # q_proj exists in the vision tower only; fc1 too. Targeting fc1 must not silently adapt vision.
    with pytest.raises(LoraTargetError, match=r"only outside model.language_model") as info:
        resolve_lora_targets(kimi_meta, ["fc1"])
    assert "kv_a_proj_with_mqa" in str(info.value)


def test_peft_on_real_dimension_meta_kimi_adapts_exactly_the_plan():
    # Real Kimi-K2.5 dimensions (384 experts, hidden 7168), 3 layers, to keep the test fast.
    with torch.device("meta"):
        model = transformers.Kimi_K25ForConditionalGeneration(_real_kimi_config(num_hidden_layers=3))
    plan = resolve_lora_targets(model, GUIDE_TARGETS)
    peft_model = peft.get_peft_model(model, plan.build_lora_config(r=64, alpha=128), low_cpu_mem_usage=True)

    tuner = peft_model.base_model
    assert sorted(tuner.targeted_module_names) == sorted(plan.target_modules)
    assert sorted(tuner.targeted_parameter_names) == sorted(plan.target_parameters)
    report = trainable_parameter_report(peft_model)
    assert report["trainable"] == plan.lora_parameter_count(64)
    assert "vision" not in report["by_kind"]


def test_tiny_kimi_gets_trainable_adapters_on_every_kind_and_gradients_flow(tiny_kimi):
    plan = resolve_lora_targets(tiny_kimi, GUIDE_TARGETS)
    peft_model = peft.get_peft_model(tiny_kimi, plan.build_lora_config(r=4, alpha=8))

    report = trainable_parameter_report(peft_model)
    assert report["trainable"] == plan.lora_parameter_count(4) > 0
    for kind in ("attention", "mlp", "shared_experts", "routed_experts"):
        assert report["by_kind"][kind] > 0, kind
    assert "vision" not in report["by_kind"]

    input_ids = torch.randint(0, 256, (2, 12))
    logits = peft_model(input_ids=input_ids).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), input_ids[:, 1:].reshape(-1)).backward()
    # lora_B starts at zero, so lora_A's first gradient is zero; lora_B's must not be.
    grads_by_kind: dict[str, float] = {}
    for name, param in peft_model.named_parameters():
        if param.requires_grad and "lora_B" in name:
            grads_by_kind[target_kind(name)] = grads_by_kind.get(target_kind(name), 0.0) + param.grad.abs().sum().item()
        elif not param.requires_grad:
            assert param.grad is None, name
    assert set(grads_by_kind) == {"attention", "mlp", "shared_experts", "routed_experts"}
    assert all(value > 0 for value in grads_by_kind.values()), grads_by_kind


def test_excluding_experts_allows_dropout_and_experts_refuse_it(tiny_kimi):
    with_experts = resolve_lora_targets(tiny_kimi, GUIDE_TARGETS)
    with pytest.raises(LoraTargetError, match="lora_dropout=0.05.*lora_dropout=0.0"):
        with_experts.build_lora_config(r=4, alpha=8, dropout=0.05)

    no_experts = resolve_lora_targets(tiny_kimi, GUIDE_TARGETS, include_experts=False)
    assert no_experts.target_parameters == []
    config = no_experts.build_lora_config(r=4, alpha=8, dropout=0.05)
    assert config.lora_dropout == 0.05 and not config.target_parameters


def test_auto_targets_everything_in_the_language_model_but_not_vision(tiny_kimi):
    plan = resolve_lora_targets(tiny_kimi, None)
    assert {_leaf(n) for n in plan.target_modules} == MLA_ATTENTION | {"gate_proj", "up_proj", "down_proj"}
    assert len(plan.target_parameters) == 2
    with_vision = resolve_lora_targets(tiny_kimi, None, include_vision=True)
    assert any("vision_tower" in n for n in with_vision.target_modules)
    assert "lm_head" not in with_vision.target_modules


def test_nonsense_targets_raise_listing_candidates(tiny_kimi):
    with pytest.raises(LoraTargetError) as info:
        resolve_lora_targets(tiny_kimi, ["query", "value"])
    message = str(info.value)
    for candidate in ("q_a_proj", "kv_b_proj", "o_proj", "gate_proj", "mlp.experts.gate_up_proj"):
        assert candidate in message


def _tiny_llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def test_llama_with_the_guide_list_maps_one_to_one():
    model = _tiny_llama()
    plan = resolve_lora_targets(model, GUIDE_TARGETS)
    assert plan.architecture == "generic" and plan.target_parameters == []
    assert len(plan.target_modules) == 2 * 7
    assert {_leaf(n) for n in plan.matches["k_proj"]} == {"k_proj"}
    peft_model = peft.get_peft_model(model, plan.build_lora_config(r=4, alpha=8, dropout=0.1))
    assert sorted(peft_model.base_model.targeted_module_names) == sorted(plan.target_modules)
    assert "lm_head" not in resolve_lora_targets(model, None).target_modules


def test_partially_missing_request_warns_and_is_reported():
    with pytest.warns(UserWarning, match="kv_b_proj"):
        plan = resolve_lora_targets(_tiny_llama(), ["q_proj", "kv_b_proj"])
    assert plan.missing == ["kv_b_proj"]
    assert len(plan.target_modules) == 2
    assert "missing: kv_b_proj" in plan.describe()


def test_gpt2_conv1d_and_dotted_suffixes():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0
    ))
    plan = resolve_lora_targets(model, ["c_attn", "mlp.c_proj"])
    assert sorted(plan.target_modules) == ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj",
                                   "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_proj"]  # fmt: skip


def test_plain_deepseek_v3_leaves_out_mlp_modules_peft_would_rewrite():
    config = transformers.DeepseekV3Config(**{k: v for k, v in TINY_TEXT.items() if k != "model_type"})
    model = transformers.DeepseekV3ForCausalLM(config)
    plan = resolve_lora_targets(model, GUIDE_TARGETS)
    assert {_leaf(n) for n in plan.target_modules} == MLA_ATTENTION
    assert any("PEFT rewrites" in note for note in plan.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(model, plan.build_lora_config(r=4, alpha=8))
    # What PEFT adapted is exactly what the plan says (no silent rewrite left).
    assert sorted(peft_model.base_model.targeted_module_names) == sorted(plan.target_modules)
    assert sorted(peft_model.base_model.targeted_parameter_names) == sorted(plan.target_parameters)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("model.language_model.layers.0.self_attn.q_a_proj.lora_A.default.weight", "attention"),
        ("model.language_model.layers.1.mlp.experts.lora_B.default.weight", "routed_experts"),
        ("model.language_model.layers.1.mlp.shared_experts.up_proj", "shared_experts"),
        ("model.language_model.layers.0.mlp.down_proj", "mlp"),
        ("model.vision_tower.layers.0.attn.q_proj", "vision"),
        ("lm_head", "other"),
    ],
)
def test_target_kind(name, kind):
    assert target_kind(name) == kind
