"""`stateset-agents plan` against hand-computed numbers: the real Kimi-K2.5 config, a tiny MLA/MoE
model with an INT4 compressed-tensors config, and a tiny Llama. Every expected value below is
written out from the config's fields (the formulas are those in stateset_agents/training/plan.py's
docstring), not computed by the code under test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers

from stateset_agents.cli import main
from stateset_agents.training.plan import (
    Hardware,
    LoraSetting,
    PlanError,
    Workload,
    find_model_config,
    plan_model,
    read_model_config,
)

KIMI_CONFIG = Path(__file__).parent / "fixtures" / "kimi-k2.5-config.json"
GIB = 2**30
H200 = Hardware(gpu_memory_gib=141, gpus_per_node=8)

# --- Kimi-K2.5, by hand, from tests/fixtures/kimi-k2.5-config.json --------------------------------
h, H, V, L = 7168, 64, 163840, 61  # hidden_size, num_attention_heads, vocab_size, num_hidden_layers
q_lora, c_kv, nope, rope, dv = 1536, 512, 128, 64, 128  # q_lora_rank, kv_lora_rank, qk_nope/rope, v_head_dim
I, I_e, E, k, dense_layers = 18432, 2048, 384, 8, 1  # intermediate, moe_intermediate, experts, top-k, first_k_dense
moe_layers = L - dense_layers
attention = (h * q_lora + q_lora + q_lora * H * (nope + rope)  # q_a_proj, q_a_layernorm, q_b_proj
             + h * (c_kv + rope) + c_kv + c_kv * H * (nope + dv)  # kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj
             + H * dv * h)  # o_proj
norms = 2 * h
expert = 3 * h * I_e  # gate, up, down of one expert
moe = E * expert + expert + E * h  # routed + 1 shared + router
TEXT = 2 * V * h + L * (attention + norms) + dense_layers * 3 * h * I + moe_layers * moe + h
vt_h, vt_i, vt_layers = 1152, 4304, 27
VISION = (3 * 14 * 14 * vt_h + vt_h + 64 * 64 * vt_h  # patch conv + bias, 64x64 position embedding
          + vt_layers * (2 * 2 * vt_h + 4 * (vt_h * vt_h + vt_h) + vt_h * vt_i + vt_i + vt_i * vt_h + vt_h)
          + 2 * vt_h  # final layernorm
          + 2 * vt_h + (4 * vt_h) * (4 * vt_h) + 4 * vt_h + 4 * vt_h * h + h)  # projector (2x2 merge)
TOTAL = TEXT + VISION
ACTIVE = TEXT - moe_layers * (E - k) * expert
QUANTISED = moe_layers * E * expert  # routed experts only: attention, shared experts, dense MLP, lm_head ignored
CHECKPOINT_BYTES = (QUANTISED * 4 // 8 + QUANTISED // 32 * 2  # int4 + one bf16 scale per 32
                    + moe_layers * E * 3 * 8  # weight_shape (2 x int32) per expert Linear
                    + (TOTAL - QUANTISED) * 2)
r = 64
LORA_ATTENTION = r * ((h + q_lora) + (q_lora + H * (nope + rope)) + (h + c_kv + rope) + (c_kv + H * (nope + dv))
                      + (H * dv + h))
LORA_NO_EXPERTS = L * LORA_ATTENTION + dense_layers * 3 * r * (h + I) + moe_layers * 3 * r * (h + I_e)
LORA_EXPERTS = moe_layers * r * E * ((2 * I_e + h) + (h + I_e))  # gate_up_proj [E,2I_e,h] + down_proj [E,h,I_e]
act_attention = (2 * h + 2 * q_lora + H * (nope + rope) + (c_kv + rope) + c_kv + H * (nope + dv)
                 + 2 * H * (nope + rope) + 2 * H * dv)
act_moe = 2 * h + 2 * E + k * (2 * h + 3 * I_e) + 3 * I_e
act_dense = 2 * h + 3 * I
lora_a_moe_layer = r * (5 + 3)  # 5 MLA projections + 3 shared-expert projections adapted per MoE layer
PER_TOKEN_CKPT = 2 * (L * h + act_attention + act_moe + lora_a_moe_layer)
PER_TOKEN_NO_CKPT = 2 * (L * act_attention + dense_layers * act_dense + moe_layers * act_moe + L * 5 * r
                         + dense_layers * 3 * r + moe_layers * 3 * r)
KV_PER_TOKEN = L * (c_kv + rope) * 2


@pytest.fixture(scope="module")
def kimi():
    raw = read_model_config(str(KIMI_CONFIG))
    values = {key: value for key, value in raw.items() if key not in ("quantization_config", "auto_map")}
    with torch.device("meta"):
        model = transformers.Kimi_K25ForConditionalGeneration(transformers.Kimi_K25Config.from_dict(values))
    return tuple(plan_model(raw, LoraSetting(r=64, experts=experts), H200, Workload(), name="moonshotai/Kimi-K2.5",
                            model=model) for experts in (True, False))


def test_kimi_parameters_weights_and_lora_match_the_hand_computation(kimi):
    with_experts, no_experts = kimi
    assert TOTAL / 1e9 == pytest.approx(1026.9, abs=0.05) and ACTIVE / 1e9 == pytest.approx(32.9, abs=0.05)
    assert with_experts.total_params == TOTAL
    assert with_experts.text_params == TEXT and with_experts.vision_params == VISION
    assert with_experts.active_params == ACTIVE
    assert with_experts.bf16_weight_bytes == 2 * TOTAL
    assert with_experts.quantised_params == QUANTISED
    assert with_experts.checkpoint_weight_bytes == CHECKPOINT_BYTES  # 595.1 GB, 554.3 GiB
    assert with_experts.lora["parameters"] == LORA_NO_EXPERTS + LORA_EXPERTS
    assert with_experts.lora["state_bytes"] == 16 * (LORA_NO_EXPERTS + LORA_EXPERTS)
    assert no_experts.lora["parameters"] == LORA_NO_EXPERTS
    assert with_experts.lora["target_modules"] == 61 * 5 + 3 + 60 * 3
    assert with_experts.lora["target_expert_tensors"] == 120


def test_kimi_activations_kv_cache_and_verdicts_match_the_hand_computation(kimi):
    with_experts, no_experts = kimi
    acts = no_experts.activations
    assert acts["bytes_per_token_checkpointing"] == PER_TOKEN_CKPT
    assert acts["bytes_per_token_no_checkpointing"] == PER_TOKEN_NO_CKPT
    assert acts["logit_bytes_per_completion_token"] == V * 18
    assert no_experts.kv_cache["bytes"] == KV_PER_TOKEN == 70_272
    assert no_experts.kv_cache["full_kv_bytes"] == L * H * (nope + rope + dv) * 2

    # training, experts off, checkpointing: micro-batch 1 x 4096 tokens, base bf16 sharded over N
    usable = 0.9 * 141 * GIB
    gather = 2 * (attention + norms + moe) * 2  # largest layer (a MoE layer), current + prefetched, bf16
    fixed = gather + 4096 * PER_TOKEN_CKPT + 4096 * V * 18
    gpus = math.ceil((2 * TOTAL + 16 * LORA_NO_EXPERTS) / (usable - fixed))
    assert gpus == 42
    assert no_experts.training["checkpointing"]["fixed_bytes_per_gpu"] == fixed
    assert no_experts.training["checkpointing"]["gpus"] == gpus and no_experts.training["checkpointing"]["nodes"] == 6
    # without checkpointing, 4096 x 31.6 MiB of activations alone fill the GPU
    assert no_experts.training["no_checkpointing"]["gpus"] is None
    # expert adapters fold W + BA: 2 x one layer's routed experts in bf16 on top of the all-gather
    fold = 2 * E * expert * 2
    assert with_experts.training["checkpointing"]["fold_bytes"] == fold
    assert gather + fold + 4096 * PER_TOKEN_CKPT + 4096 * V * 18 > usable
    assert with_experts.training["checkpointing"]["gpus"] is None

    # rollouts: INT4 checkpoint / tp + MLA latent cache (replicated per TP rank) for 8 x 4096 tokens
    kv = 8 * 4096 * KV_PER_TOKEN
    assert CHECKPOINT_BYTES / 4 + kv > usable >= CHECKPOINT_BYTES / 8 + kv
    assert with_experts.rollout["tp"] == 8 and with_experts.rollout["pp"] == 1
    assert with_experts.rollout["command"] == "vllm serve moonshotai/Kimi-K2.5 -tp 8 --max-model-len 4096"
    text = with_experts.render()
    assert "does not fit at any N" in text and "rollout server: 8 GPUs" in text
    assert "42 x 141 GiB GPUs (6 node(s) of 8)" in no_experts.render()


# --- tiny MLA + MoE with an INT4 compressed-tensors config ----------------------------------------
TINY = dict(
    model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"], dtype="bfloat16", vocab_size=256,
    hidden_size=64, num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
    n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, q_lora_rank=32, kv_lora_rank=16,
    qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, moe_intermediate_size=32, intermediate_size=128,
    n_group=1, topk_group=1, tie_word_embeddings=False,
    quantization_config={
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
            "num_bits": 4, "group_size": 8, "strategy": "group", "symmetric": True, "type": "int"}}},
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"],
    },
)  # fmt: skip


def test_tiny_mla_moe_plan_matches_the_hand_computation(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    hw = Hardware(gpu_memory_gib=0.00085, gpus_per_node=2)  # 0.87 MiB GPUs: small enough to need several
    work = Workload(micro_batch=2, seq_len=16, completion_len=8, concurrency=3, context=32)
    plan = plan_model(read_model_config(str(path)), LoraSetting(r=4), hw, work, name=str(path))

    h, H, V, L, ql, c, nope, rope, dv, I, Ie, E, k, r = 64, 4, 256, 2, 32, 16, 16, 8, 16, 128, 32, 8, 2, 4
    attention = h * ql + ql + ql * H * (nope + rope) + h * (c + rope) + c + c * H * (nope + dv) + H * dv * h
    expert = 3 * h * Ie
    moe = E * expert + expert + E * h
    total = 2 * V * h + L * (attention + 2 * h) + 3 * h * I + moe + h
    assert plan.total_params == plan.text_params == total and plan.vision_params == 0
    assert plan.active_params == total - (E - k) * expert
    quantised = E * expert
    assert plan.quantised_params == quantised
    checkpoint = quantised // 2 + quantised // 8 * 2 + E * 3 * 8 + (total - quantised) * 2
    assert plan.checkpoint_weight_bytes == checkpoint
    # plain deepseek_v3: PEFT would rewrite gate/up/down_proj into the experts, so the resolution
    # adapts attention (5 per layer) and the fused experts only (models/lora_targets.py)
    lora_attention = r * ((h + ql) + (ql + H * (nope + rope)) + (h + c + rope) + (c + H * (nope + dv)) + (H * dv + h))
    lora = L * lora_attention + r * E * ((2 * Ie + h) + (h + Ie))
    assert plan.lora["parameters"] == lora and plan.lora["target_modules"] == 10

    act_attention = (2 * h + 2 * ql + H * (nope + rope) + (c + rope) + c + H * (nope + dv)
                     + 2 * H * (nope + rope) + 2 * H * dv)
    act_dense, act_moe = 2 * h + 3 * I, 2 * h + 2 * E + k * (2 * h + 3 * Ie) + 3 * Ie
    no_ckpt = 2 * (2 * act_attention + act_dense + act_moe + 2 * 5 * r)
    ckpt = 2 * (L * h + max(act_attention + act_dense, act_attention + act_moe) + 5 * r)
    assert plan.activations["bytes_per_token_no_checkpointing"] == no_ckpt
    assert plan.activations["bytes_per_token_checkpointing"] == ckpt
    assert plan.kv_cache["bytes"] == L * (c + rope) * 2

    usable = 0.9 * 0.00085 * GIB
    largest_layer = attention + 2 * h + moe
    fold = 2 * E * expert * 2
    fixed = 2 * largest_layer * 2 + fold + 2 * 16 * ckpt + 2 * 8 * V * 18
    gpus = math.ceil((2 * total + 16 * lora) / (usable - fixed))
    assert gpus > 1 and plan.training["checkpointing"]["gpus"] == gpus
    assert plan.training["checkpointing"]["nodes"] == math.ceil(gpus / 2)
    # rollouts: tp in 1, 2 (divides 4 heads, <= 2 per node); MLA cache not split
    kv = 3 * 32 * L * (c + rope) * 2
    tp = next(t for t in (1, 2) if checkpoint / t + kv <= usable)
    assert plan.rollout["tp"] == tp and plan.rollout["command"].startswith(f"vllm serve {tmp_path} -tp {tp}")


def test_tiny_llama_dense_gqa_fits_one_gpu_and_splits_its_kv_cache(tmp_path):
    config = dict(model_type="llama", dtype="bfloat16", vocab_size=128, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    (tmp_path / "config.json").write_text(json.dumps(config))
    plan = plan_model(read_model_config(str(tmp_path)), LoraSetting(r=2, targets=["q_proj", "v_proj"]),
                      Hardware(gpu_memory_gib=1), Workload(seq_len=10))
    h, V, L, H, KV, d, I, r = 32, 128, 2, 4, 2, 8, 64, 2
    total = 2 * V * h + L * (h * H * d + 2 * h * KV * d + H * d * h + 3 * h * I + 2 * h) + h
    assert plan.total_params == plan.active_params == total
    assert plan.checkpoint_weight_bytes == plan.bf16_weight_bytes == 2 * total and plan.quantised_params == 0
    assert plan.lora["parameters"] == L * r * ((h + H * d) + (h + KV * d))
    per_layer = 2 * h + (H * d + 2 * KV * d) + (H * d + KV * d) + H * d + 2 * h + 3 * I + 2 * r
    assert plan.activations["bytes_per_token_no_checkpointing"] == 2 * L * per_layer
    assert plan.kv_cache["bytes"] == L * 2 * KV * d * 2 and plan.kv_cache["split_by_tp"]
    assert plan.training["checkpointing"]["gpus"] == plan.training["no_checkpointing"]["gpus"] == 1
    assert plan.rollout["tp"] == 1


def test_cli_plan_reads_the_hub_id_from_the_local_cache_and_prints_json(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--moonshotai--Kimi-K2.5" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(KIMI_CONFIG.read_text())
    (tmp_path / "models--moonshotai--Kimi-K2.5" / "refs").mkdir()
    (tmp_path / "models--moonshotai--Kimi-K2.5" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert find_model_config("moonshotai/Kimi-K2.5") == snapshot / "config.json"

    assert main(["plan", "--model", "moonshotai/Kimi-K2.5", "--gpu-memory", "141", "--gpus-per-node", "8",
                 "--no-lora-experts", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["total_params"] == TOTAL and plan["active_params"] == ACTIVE
    assert plan["checkpoint_weight_bytes"] == CHECKPOINT_BYTES and plan["lora"]["parameters"] == LORA_NO_EXPERTS
    assert plan["training"]["checkpointing"]["gpus"] == 42 and plan["rollout"]["tp"] == 8


def test_cli_plan_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    assert main(["plan", "--model", "moonshotai/Kimi-K2.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the config.json of 'moonshotai/Kimi-K2.5' is not in the local Hugging Face cache")
    assert err.count("\n") == 1
    assert main(["plan", "--model", str(tmp_path)]) == 2  # a directory without config.json
    assert "without a config.json" in capsys.readouterr().err
    with pytest.raises(PlanError, match="not a model config.json"):
        (tmp_path / "other.json").write_text("{}")
        read_model_config(str(tmp_path / "other.json"))
