"""`cached_expert_lora`: sampling with the adapted expert weights cached gives bitwise the same result."""

from __future__ import annotations

import copy

import pytest
import torch

from stateset_agents.rollout.lora_cache import cached_expert_lora


@pytest.fixture(scope="module")
def peft_model(tiny_loaded):
    from peft import get_peft_model

    from stateset_agents.models.lora_targets import resolve_lora_targets

    model = copy.deepcopy(tiny_loaded.model)
    plan = resolve_lora_targets(model, None, include_experts=True)
    assert plan.target_parameters, "the tiny model must have adapted routed experts for this test"
    peft = get_peft_model(model, plan.build_lora_config(4, 8, 0.0))
    torch.manual_seed(0)
    for name, parameter in peft.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a real effect
            parameter.data.normal_(0, 0.5)
    return peft.eval()


def _sample(model, input_ids, cache: bool):
    torch.manual_seed(7)
    with torch.no_grad():
        if cache:
            with cached_expert_lora(model) as cached:
                assert cached > 0
                out = model.generate(input_ids=input_ids, do_sample=True, max_new_tokens=12, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=0)
        else:
            out = model.generate(input_ids=input_ids, do_sample=True, max_new_tokens=12, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.logits, 1)


def test_cached_expert_lora_is_bitwise_identical(peft_model):
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    plain_ids, plain_logits = _sample(peft_model, input_ids, cache=False)
    cached_ids, cached_logits = _sample(peft_model, input_ids, cache=True)
    assert torch.equal(plain_ids, cached_ids)
    assert torch.equal(plain_logits, cached_logits)


def test_the_adapter_matters_and_the_cache_is_released(peft_model):
    input_ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        adapted = peft_model(input_ids=input_ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=input_ids).logits
        with cached_expert_lora(peft_model):
            pass
        after = peft_model(input_ids=input_ids).logits
    assert not torch.allclose(adapted, base)  # the expert adapters change the output
    assert torch.equal(adapted, after)  # nothing left behind
    assert not any("forward" in vars(m) for m in peft_model.modules())


def test_no_cache_when_gradients_are_on(peft_model):
    with cached_expert_lora(peft_model) as cached:
        assert cached == 0


def test_merged_linear_lora_matches_the_adapter_within_rounding(peft_model):
    from stateset_agents.rollout.lora_cache import merged_linear_lora, sampling_weights

    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        reference = peft_model(input_ids=input_ids).logits
        with merged_linear_lora(peft_model) as merged:
            assert merged > 0
            merged_logits = peft_model(input_ids=input_ids).logits
        with sampling_weights(peft_model):
            both_logits = peft_model(input_ids=input_ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=input_ids).logits
        after = peft_model(input_ids=input_ids).logits
    # merging reorders float32 sums (W x + B A x vs (W + B A) x): ~1e-5 apart; the adapter moves logits > 1e-3
    assert torch.allclose(merged_logits, reference, atol=1e-4)
    assert torch.allclose(both_logits, reference, atol=1e-4)
    assert not torch.allclose(base, reference, atol=1e-3)  # the adapter is not a no-op
    assert torch.equal(after, reference)
    assert not any("forward" in vars(m) for m in peft_model.modules())


def test_sampler_logprobs_match_the_trainer_with_an_active_adapter(peft_model, tiny_loaded):
    """DESIGN.md invariant 1 with LoRA on: sampling runs on folded weights, scoring on PEFT's path."""
    from stateset_agents.rollout.encoding import EncodedPrompt
    from stateset_agents.rollout.hf_generation import HFGenerator, SamplingSettings
    from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions

    tokenizer = tiny_loaded.tokenizer
    generator = HFGenerator(peft_model, tokenizer.pad_token_id, [tokenizer.convert_tokens_to_ids("<|im_end|>")])
    prompts = [EncodedPrompt([5, 6, 7, 8, 9]), EncodedPrompt([10, 11, 12]), EncodedPrompt(list(range(20, 40)))]
    torch.manual_seed(3)
    samples = generator.generate(prompts, SamplingSettings(max_new_tokens=16, temperature=1.0))
    batch = build_scoring_batch(prompts, [s.completion_ids for s in samples], tokenizer.pad_token_id,
                                torch.device("cpu"), torch.float32)
    with torch.no_grad():
        scored = score_completions(peft_model, batch).logprobs
    gaps = [float((torch.tensor(s.logprobs) - scored[row, scored.shape[1] - len(s.completion_ids):]).abs().max())
            for row, s in enumerate(samples)]
    assert max(gaps) < 1e-4
