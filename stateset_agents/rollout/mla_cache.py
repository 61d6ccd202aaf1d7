"""MLA keys and values expanded once per position during `generate`, not once per decode step.

Kimi-K2.5's attention (transformers' DeepSeek-V3 MLA) caches the compressed latent of every position
and, at every decode step, expands the *whole* cached latent through `kv_b_proj` again
(`DeepseekV3Attention.expand_kv`): B x L x kv_lora_rank x heads*(nope+v) multiply-adds per layer per
new token. With the tiny model's vLLM-compatible kv_lora_rank of 512 that matmul was half of all
sampling time on CPU (a profile of the demo's held-out evaluation: 17 of 35 s).

Within one `generate` call the cached prefix never changes (its latents are normalised and its rotary
part rotated before they are cached), and `kv_b_proj` is applied to each position independently, so the
expansion of the positions already seen can be kept and only the new positions expanded.
`incremental_mla_expansion(model)` does that for the duration of a no-grad block: each attention module
keeps the keys/values it returned last and, when called again with a longer latent of the same batch,
expands only the tail. Anything else (a shorter or equal length, another batch size) expands in full.

The result equals the full expansion up to the matmul's rounding on a different number of rows
(tests/test_rollout_mla_cache.py checks the sampled tokens are the same and the logprobs agree).
Gradients and the trainer's scoring never see it: it is only entered by `HFGenerator.generate`.

`growing_cache(model)` is the cache `HFGenerator.generate` passes to `generate`: transformers' `DynamicCache` whose
layers keep their states in buffers that grow by doubling instead of concatenating the whole cache at every step
(for any architecture; bit for bit the same values).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class _ExpandedPrefix:
    """One attention module's keys/values for the positions expanded so far in this `generate` call,
    in buffers that grow by doubling (a concatenation per step would copy the whole prefix every step)."""

    def __init__(self, expand):
        self.expand = expand  # the module's own expand_kv (bound method)
        self.keys: torch.Tensor | None = None  # [B, heads, capacity, head_dim]; the first `seen` positions are valid
        self.values: torch.Tensor | None = None
        self.seen = 0

    def __call__(self, kv_nope: torch.Tensor, k_rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = kv_nope.shape[2]
        if self.keys is None or length <= self.seen or kv_nope.shape[0] != self.keys.shape[0]:
            keys, values = self.expand(kv_nope, k_rot)
            self.keys, self.values, self.seen = keys, values, length
            return keys, values
        new_keys, new_values = self.expand(kv_nope[:, :, self.seen:], k_rot[:, :, self.seen:])
        if length > self.keys.shape[2]:
            self.keys = _grown(self.keys, new_keys, self.seen, length)
            self.values = _grown(self.values, new_values, self.seen, length)
        self.keys[:, :, self.seen:length] = new_keys
        self.values[:, :, self.seen:length] = new_values
        self.seen = length
        return self.keys[:, :, :length], self.values[:, :, :length]


def _grown(filled: torch.Tensor, new: torch.Tensor, seen: int, length: int) -> torch.Tensor:
    """A buffer shaped like `new` but holding at least `length` positions (dim -2; twice `seen` when that is more),
    with `filled`'s first `seen` positions copied in."""
    buffer = new.new_empty(*new.shape[:-2], max(2 * seen, length), new.shape[-1])
    if seen:
        buffer[..., :seen, :] = filled[..., :seen, :]
    return buffer


def _mla_attentions(model) -> list:
    return [m for m in model.modules() if callable(getattr(type(m), "expand_kv", None)) and hasattr(m, "kv_b_proj")]


@contextmanager
def incremental_mla_expansion(model) -> Iterator[int]:
    """No-grad only. Yields the number of MLA attention modules that expand incrementally
    (0 for other architectures, or a transformers whose MLA has no `expand_kv`)."""
    attentions = _mla_attentions(model)
    if not attentions or torch.is_grad_enabled():
        yield 0
        return
    try:
        for attention in attentions:  # an instance attribute shadows the class's expand_kv
            attention.expand_kv = _ExpandedPrefix(attention.expand_kv)
        yield len(attentions)
    finally:
        for attention in attentions:
            vars(attention).pop("expand_kv", None)


class GrowingLayer(DynamicLayer):
    """transformers' `DynamicLayer` without its per-step `torch.cat`: the cached states live in buffers that grow by
    doubling, and `keys` / `values` are views of their filled part (a concatenation copies the whole cache at every
    decode step: ~19% of sampling on the tiny model). The same values as `DynamicLayer`, bit for bit."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        seen = self.get_seq_length()
        length = seen + key_states.shape[-2]
        buffers = getattr(self, "_buffers", None)
        if buffers is None or not self._views_of(buffers, seen) or length > buffers[0].shape[-2]:
            buffers = (_grown(self.keys, key_states, seen, length), _grown(self.values, value_states, seen, length))
        buffers[0][..., seen:length, :] = key_states
        buffers[1][..., seen:length, :] = value_states
        self._buffers = buffers
        self.keys, self.values = buffers[0][..., :length, :], buffers[1][..., :length, :]
        return self.keys, self.values

    def _views_of(self, buffers, seen: int) -> bool:
        """Whether keys/values are still the first `seen` positions of the buffers (a crop keeps them views; a
        reorder or reset replaces them)."""
        return seen > 0 and all(view.data_ptr() == buffer.data_ptr() and view.shape[:-2] == buffer.shape[:-2]
                                for view, buffer in zip((self.keys, self.values), buffers))


def growing_cache(model) -> dict[str, Any]:
    """`generate`'s keyword argument for the `DynamicCache` it would make for `model`, with `GrowingLayer`s for its
    plain dynamic layers. The keyword is `cache` where the model's forward takes one (transformers renamed
    `past_key_values`, and the old name warns), `past_key_values` before that."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's forward is generic
    keyword = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return {keyword: cache}
