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
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


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
            self.keys, self.values = self._grown(self.keys, length), self._grown(self.values, length)
        self.keys[:, :, self.seen:length] = new_keys
        self.values[:, :, self.seen:length] = new_values
        self.seen = length
        return self.keys[:, :, :length], self.values[:, :, :length]

    def _grown(self, buffer: torch.Tensor, length: int) -> torch.Tensor:
        grown = buffer.new_empty(*buffer.shape[:2], max(2 * buffer.shape[2], length), buffer.shape[3])
        grown[:, :, :self.seen] = buffer[:, :, :self.seen]
        return grown


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
