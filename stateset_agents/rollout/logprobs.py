"""Teacher-forced log-probabilities of completions: the trainer's view of what the sampler did.

Rows are left-padded `prompt + completion`, so every completion ends at the last column and the
model only needs logits for the last `max completion length + 1` positions (`logits_to_keep`):
no full-sequence × full-vocabulary logits tensor is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stateset_agents.rollout.encoding import EncodedPrompt, image_inputs, left_padded_batch


@dataclass
class ScoringBatch:
    """Completions to score. `completion_mask` [B, C] marks real completion tokens (right-aligned)."""

    model_inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor  # [B, C], right-aligned, pad on the left
    completion_mask: torch.Tensor  # [B, C]


def build_scoring_batch(
    prompts: list[EncodedPrompt], completions: list[list[int]], pad_token_id: int,
    device: torch.device, dtype: torch.dtype,
) -> ScoringBatch:
    sequences = [p.input_ids + c for p, c in zip(prompts, completions)]
    model_inputs = left_padded_batch(sequences, pad_token_id, device)
    model_inputs.update(image_inputs(prompts, device, dtype))
    width = max(len(c) for c in completions)
    completion_ids = torch.full((len(completions), width), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((len(completions), width), dtype=torch.float32)
    for row, completion in enumerate(completions):
        if completion:
            completion_ids[row, width - len(completion):] = torch.tensor(completion)
            completion_mask[row, width - len(completion):] = 1.0
    return ScoringBatch(model_inputs, completion_ids.to(device), completion_mask.to(device))


@dataclass
class ScoredTokens:
    logprobs: torch.Tensor  # [B, C] log π(token) at the sampling temperature
    entropy: torch.Tensor | None  # [B, C] entropy of the tempered distribution (no grad), if asked


def score_completions(model, batch: ScoringBatch, temperature: float = 1.0, with_entropy: bool = False) -> ScoredTokens:
    """Log-probabilities of `batch.completion_ids` under `model`, differentiable."""
    width = batch.completion_ids.shape[1]
    output = model(**batch.model_inputs, logits_to_keep=width + 1, use_cache=False)
    # logits at position t predict token t+1: the last `width` predictions come from columns -width-1 .. -2
    logits = output.logits[:, -width - 1:-1, :].float() / temperature  # [B, C, V]
    logprobs_all = torch.log_softmax(logits, dim=-1)
    logprobs = logprobs_all.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logprobs_all.exp() * logprobs_all).sum(-1)
    return ScoredTokens(logprobs * batch.completion_mask, entropy)
