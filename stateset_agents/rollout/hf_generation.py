"""Batched sampling with Hugging Face `generate`, returning exact ids and sampling logprobs.

The sampling logprob of a token is defined once, here and in `rollout.logprobs`: the log-softmax
of the model's *raw* logits divided by the temperature. `generate`'s `output_scores` come after
its logits processors (top-k/top-p masking) and would differ by whole nats, so we read
`output_logits` instead. With top-p < 1 (or top-k > 0) tokens are *drawn* from the truncated
distribution, but π_old is still the untruncated tempered distribution: the trainer computes
exactly the same quantity, so ratios are consistent (the truncation is treated as part of the
behaviour policy's exploration, as TRL and verl do). Greedy decoding (temperature 0) records
logprobs at temperature 1.

Every row draws its tokens from its own `torch.Generator`, seeded per request (`seeds`): a
completion depends on its prompt and its seed only, not on which other prompts share the batch,
on `rollout_concurrency`, or on how many processes split the rollouts (training/distributed.py
relies on this: two ranks sample exactly the episodes one process would). `generate` runs
greedy over scores our `SeededDraw` processor has reduced to the drawn token, so its own
sampler never touches the global RNG. Rows without a seed get one from the global torch RNG,
so seeding the process still makes them reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.generation.logits_process import (
    LogitsProcessor, LogitsProcessorList, SuppressTokensLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
    TopPLogitsWarper,
)

from stateset_agents.rollout.encoding import EncodedPrompt, image_inputs, left_padded_batch
from stateset_agents.rollout.lora_cache import sampling_weights
from stateset_agents.rollout.mla_cache import growing_cache, incremental_mla_expansion


@dataclass
class SamplingSettings:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    # ids the model must never emit (the image placeholder: a sampled one would claim image features that
    # do not exist when the turn is scored); masked before anything else, greedy included
    suppress_token_ids: tuple[int, ...] = ()

    @property
    def logprob_temperature(self) -> float:
        return self.temperature if self.temperature > 0 else 1.0


def request_seeds(seeds: list[int | None] | None, count: int) -> list[int]:
    """One seed per request: the given ones, the missing drawn from the global torch RNG."""
    seeds = list(seeds) if seeds is not None else [None] * count
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts")
    drawn = torch.randint(0, 2**62, (count,)).tolist() if None in seeds else seeds
    return [int(s) % 2**62 if s is not None else d for s, d in zip(seeds, drawn)]


class SeededDraw(LogitsProcessor):
    """Samples each row's next token from its (already warped) scores with that row's own generator;
    returns scores that are 0 at the drawn token and -inf elsewhere, so greedy search emits it."""

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float(), dim=-1).cpu()  # [B, V]; generators live on the CPU
        drawn = torch.tensor([int(torch.multinomial(row, 1, generator=g)) for row, g in zip(probs, self.generators)],
                             device=scores.device)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), drawn] = 0.0
        return out


def sampling_processors(sampling: "SamplingSettings", seeds: list[int] | None, device) -> LogitsProcessorList:
    """suppressed ids -> temperature -> top-k -> top-p (transformers' own processors, generate's order) ->
    the seeded draw; without seeds (greedy) only the suppression."""
    processors = LogitsProcessorList()
    if sampling.suppress_token_ids:
        processors.append(SuppressTokensLogitsProcessor(list(sampling.suppress_token_ids), device=device))
    if seeds is None:
        return processors
    processors.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k and sampling.top_k > 0:
        processors.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(sampling.top_p))
    processors.append(SeededDraw(seeds))
    return processors


@dataclass
class Sample:
    """One completion: exact sampled ids (end-of-turn included when sampled) and their logprobs."""

    prompt: EncodedPrompt
    completion_ids: list[int]
    logprobs: list[float]
    finished: bool


class HFGenerator:
    """Samples completions for a batch of encoded prompts in one `generate` call."""

    def __init__(self, model, pad_token_id: int, stop_token_ids: list[int]):
        self.model = model
        self.pad_token_id = pad_token_id
        self.stop_token_ids = list(stop_token_ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def generate(self, prompts: list[EncodedPrompt], sampling: SamplingSettings,
                 seeds: list[int | None] | None = None) -> list[Sample]:
        """One completion per prompt; row i draws its tokens with `seeds[i]` (see the module docstring)."""
        if not prompts:
            return []
        batch = left_padded_batch([p.input_ids for p in prompts], self.pad_token_id, self.device)
        batch.pop("position_ids")  # generate derives the same positions from the attention mask
        batch.update(image_inputs(prompts, self.device, self.dtype))
        seeds = request_seeds(seeds, len(prompts)) if sampling.temperature > 0 else None  # None: greedy
        processors = sampling_processors(sampling, seeds, self.device)
        # LoRA folded into the weights once per call, and MLA's keys/values expanded once per position, not per step
        with sampling_weights(self.model), incremental_mla_expansion(self.model):
            output = self.model.generate(
                **batch,
                do_sample=False,  # greedy over SeededDraw's scores = our per-row sample
                logits_processor=processors,
                temperature=None, top_p=None, top_k=None,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=self.stop_token_ids,
                pad_token_id=self.pad_token_id,
                **growing_cache(self.model),
                output_logits=True,
                return_dict_in_generate=True,
            )
        prompt_width = batch["input_ids"].shape[1]
        completions = output.sequences[:, prompt_width:]  # [B, C]
        logits = torch.stack(output.logits, dim=1).float()  # [B, C, V] raw logits
        logprobs = torch.log_softmax(logits / sampling.logprob_temperature, dim=-1)
        token_logprobs = logprobs.gather(-1, completions.unsqueeze(-1)).squeeze(-1)  # [B, C]
        return [self._trim(prompt, completions[row], token_logprobs[row]) for row, prompt in enumerate(prompts)]

    def _trim(self, prompt: EncodedPrompt, ids: torch.Tensor, logprobs: torch.Tensor) -> Sample:
        """Cut a row after its first stop token (what follows is padding)."""
        ids_list = ids.tolist()
        stops = [i for i, token in enumerate(ids_list) if token in self.stop_token_ids]
        end = stops[0] + 1 if stops else len(ids_list)
        return Sample(prompt, ids_list[:end], logprobs[:end].tolist(), finished=bool(stops))
