"""`incremental_mla_expansion`: sampling with MLA keys/values expanded once per position gives the same tokens
and logits as transformers' full re-expansion at every step."""

from __future__ import annotations

import warnings

import pytest
import torch

from stateset_agents.rollout.mla_cache import incremental_mla_expansion


def _generate(model, input_ids, attention_mask, incremental: bool):
    torch.manual_seed(7)
    with torch.no_grad():
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, max_new_tokens=24,
                      output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        if incremental:
            with incremental_mla_expansion(model) as patched:
                assert patched == model.config.get_text_config().num_hidden_layers
                out = model.generate(**kwargs)
        else:
            out = model.generate(**kwargs)
    return out.sequences, torch.stack(out.logits, 1)


def test_incremental_expansion_samples_the_same_tokens_and_logits(tiny_loaded):
    model = tiny_loaded.model.eval()
    # two rows, the second left-padded: the cached prefix holds padding as well
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [0, 0, 12, 13, 14, 15, 16]])
    attention_mask = (torch.arange(7) >= torch.tensor([[0], [2]])).long()
    full_ids, full_logits = _generate(model, input_ids, attention_mask, incremental=False)
    fast_ids, fast_logits = _generate(model, input_ids, attention_mask, incremental=True)
    assert full_ids.shape[1] > input_ids.shape[1] + 8  # enough decode steps for the buffers to grow
    assert torch.equal(full_ids, fast_ids)
    torch.testing.assert_close(fast_logits, full_logits, rtol=1e-5, atol=1e-5)


def test_a_call_that_is_not_a_continuation_expands_in_full(tiny_loaded):
    attention = next(m for m in tiny_loaded.model.modules() if hasattr(m, "kv_b_proj"))
    rank, rope = attention.config.kv_lora_rank, attention.config.qk_rope_head_dim
    torch.manual_seed(0)
    first = torch.randn(2, 1, 6, rank), torch.randn(2, 1, 6, rope)
    other = torch.randn(2, 1, 4, rank), torch.randn(2, 1, 4, rope)  # shorter: a new prompt, not a continuation
    longer = torch.cat([other[0], torch.randn(2, 1, 3, rank)], 2), torch.cat([other[1], torch.randn(2, 1, 3, rope)], 2)
    with torch.no_grad(), incremental_mla_expansion(tiny_loaded.model):
        attention.expand_kv(*first)
        for latents in (other, longer):
            keys, values = attention.expand_kv(*latents)
            expected_keys, expected_values = type(attention).expand_kv(attention, *latents)
            torch.testing.assert_close(keys, expected_keys)
            torch.testing.assert_close(values, expected_values)
    assert "expand_kv" not in vars(attention)  # the class's own method again


def test_nothing_is_patched_when_gradients_are_on(tiny_loaded):
    with incremental_mla_expansion(tiny_loaded.model) as patched:
        assert patched == 0
    assert not any("expand_kv" in vars(m) for m in tiny_loaded.model.modules())


@pytest.mark.parametrize("length", [1, 5])
def test_the_buffers_grow_past_their_capacity(tiny_loaded, length):
    attention = next(m for m in tiny_loaded.model.modules() if hasattr(m, "kv_b_proj"))
    rank, rope = attention.config.kv_lora_rank, attention.config.qk_rope_head_dim
    torch.manual_seed(1)
    latents = torch.randn(1, 1, length + 20, rank), torch.randn(1, 1, length + 20, rope)
    with torch.no_grad(), incremental_mla_expansion(tiny_loaded.model):
        for end in range(length, length + 21):  # one position per step, as generate's decode steps
            keys, values = attention.expand_kv(latents[0][:, :, :end], latents[1][:, :, :end])
        expected_keys, expected_values = type(attention).expand_kv(attention, *latents)
    torch.testing.assert_close(keys, expected_keys)
    torch.testing.assert_close(values, expected_values)


def test_the_growing_cache_generates_bit_for_bit_what_the_dynamic_cache_does(tiny_loaded):
    from stateset_agents.rollout.mla_cache import GrowingLayer, growing_cache

    model = tiny_loaded.model.eval()
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [0, 0, 12, 13, 14, 15, 16]])
    attention_mask = (torch.arange(7) >= torch.tensor([[0], [2]])).long()
    outputs = []
    for cache_argument in ({}, growing_cache(model)):
        torch.manual_seed(7)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # the keyword transformers expects, not a deprecated one
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, max_new_tokens=24,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=0, **cache_argument)
        outputs.append((out.sequences, torch.stack(out.logits, 1)))
        if cache_argument:
            (cache,) = cache_argument.values()
            assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
            assert cache.get_seq_length() == out.sequences.shape[1] - 1  # the last token is sampled, never fed
    (plain_ids, plain_logits), (grown_ids, grown_logits) = outputs
    assert torch.equal(plain_ids, grown_ids)
    assert torch.equal(plain_logits, grown_logits)


def test_a_growing_layer_continues_after_a_crop_and_rebuilds_after_a_reorder():
    from transformers.cache_utils import DynamicLayer

    from stateset_agents.rollout.mla_cache import GrowingLayer

    torch.manual_seed(0)
    steps = [torch.randn(2, 1, n, 3) for n in (4, 1, 1, 1, 1, 1)]
    grown, plain = GrowingLayer(), DynamicLayer()
    for i, states in enumerate(steps):
        if i == 3:
            grown.crop(-2), plain.crop(-2)
        if i == 5:
            order = torch.tensor([1, 0])
            grown.reorder_cache(order), plain.reorder_cache(order)
        keys, values = grown.update(states, states * 2)
        expected_keys, expected_values = plain.update(states, states * 2)
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values), i
