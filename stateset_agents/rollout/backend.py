"""What the rollout loop needs from whatever samples completions: the `RolloutBackend` protocol.

A backend turns exact prompt token ids into exact sampled ids plus one logprob per sampled token
(invariant 1, token-in, token-out): nothing is decoded and re-tokenised on the way. Two exist:

- `rollout.hf_generation.HFGenerator`: Hugging Face `generate` on the trainer's own model. Its
  logprobs are the trainer's own (log-softmax of the raw logits at the sampling temperature), so
  they can serve as π_old directly.
- `rollout.vllm_client.VLLMGenerator`: one or more vLLM OpenAI-compatible servers. Its logprobs
  are the *sampler's* (log μ: another engine, another kernel, possibly a stale weight copy and the
  top-k/top-p truncated distribution), so the trainer must recompute π_old itself and may use
  μ only for an importance correction (truncated importance sampling, Yao et al. 2025).

`exact_logprobs` tells the trainer which case it is in. Both classes satisfy the protocol
structurally (no inheritance); an SGLang client could implement it the same way.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from stateset_agents.rollout.encoding import EncodedPrompt
from stateset_agents.rollout.hf_generation import HFGenerator, Sample, SamplingSettings

__all__ = ["RolloutBackend", "backend_name", "has_exact_logprobs", "EncodedPrompt", "Sample", "SamplingSettings"]


@runtime_checkable
class RolloutBackend(Protocol):
    """Samples one completion per prompt; `seeds[i]` (None: drawn) makes prompt i's sample reproducible
    whatever else shares the call.

    Returned `Sample`s are in the order of `prompts`; `completion_ids` include the stop token when
    one was sampled (`finished` is then True) and `logprobs` has one entry per completion id.
    """

    def generate(self, prompts: list[EncodedPrompt], sampling: SamplingSettings,
                 seeds: list[int | None] | None = None) -> list[Sample]: ...


def backend_name(backend: RolloutBackend) -> str:
    """A short name for logs and metrics: the backend's `name` attribute, else its class name."""
    return str(getattr(backend, "name", type(backend).__name__))


def has_exact_logprobs(backend: RolloutBackend) -> bool:
    """Whether the backend's logprobs equal the trainer's own recomputation (π_old) up to float error.

    Backends say so with an `exact_logprobs` attribute. `HFGenerator` samples from the trainer's
    own model and has none, so it is known to be exact; anything else unknown is assumed not to
    be: recomputing π_old costs a forward pass, trusting a wrong one biases every update.
    """
    declared = getattr(backend, "exact_logprobs", None)
    if declared is not None:
        return bool(declared)
    return isinstance(backend, HFGenerator)
