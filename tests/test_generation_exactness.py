"""Invariant 1 of DESIGN.md: the trainer's teacher-forced logprobs equal the sampler's.

Tolerance: 1e-4 nats absolute per token (float32 on CPU; observed gaps are ~1e-6, differences come
from the KV-cached vs full-sequence attention summation order only).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from stateset_agents.core.messages import image_to_data_url
from stateset_agents.rollout.encoding import EncodedPrompt
from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions

TOLERANCE = 1e-4


def conversations() -> list[list[dict]]:
    photo = Image.new("RGB", (56, 42), (200, 30, 30))
    return [
        [{"role": "user", "content": "Hi, where is my order?"}],
        [
            {"role": "user", "content": "My parcel arrived broken, can I get a refund please? It was order A1234."},
            {"role": "assistant", "content": "Sorry to hear that. Let me check."},
            {"role": "user", "content": "Thanks."},
        ],
        [{"role": "user", "content": [
            {"type": "text", "text": "Look at this photo."},
            {"type": "image_url", "image_url": {"url": image_to_data_url(photo)}},
        ]}],
    ]


def teacher_forced_logprobs(agent, turns, temperature: float) -> list[torch.Tensor]:
    prompts = [EncodedPrompt(t.prompt_ids, t.pixel_values, t.image_grid_thw) for t in turns]
    batch = build_scoring_batch(prompts, [t.completion_ids for t in turns], agent.tokenizer.pad_token_id,
                                torch.device("cpu"), torch.float32)
    with torch.no_grad():
        scored = score_completions(agent.model, batch, temperature=temperature).logprobs
    return [scored[row, scored.shape[1] - len(t.completion_ids):] for row, t in enumerate(turns)]


def max_logprob_gap(turns, rescored) -> float:
    return max(float((torch.tensor(t.logprobs) - r).abs().max()) for t, r in zip(turns, rescored))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_trainer_logprobs_match_sampler(tiny_agent, temperature, top_p):
    torch.manual_seed(0)
    turns = tiny_agent.generate(conversations(), temperature=temperature, top_p=top_p)
    lengths = {len(t.prompt_ids) for t in turns}
    assert len(lengths) == 3, "the batch must mix prompt lengths (left padding exercised)"
    assert turns[2].pixel_values is not None and turns[2].image_grid_thw.shape == (1, 3)
    assert all(len(t.completion_ids) > 0 for t in turns)
    rescored = teacher_forced_logprobs(tiny_agent, turns, temperature)
    assert max_logprob_gap(turns, rescored) < TOLERANCE


def test_exactness_check_detects_a_perturbed_logprob(tiny_agent):
    torch.manual_seed(1)
    turns = tiny_agent.generate(conversations())
    rescored = teacher_forced_logprobs(tiny_agent, turns, 1.0)
    assert max_logprob_gap(turns, rescored) < TOLERANCE
    turns[1].logprobs[0] += 1e-3
    assert max_logprob_gap(turns, rescored) > TOLERANCE


def test_image_content_changes_the_model_output(tiny_agent):
    def logits_for(color):
        image = Image.new("RGB", (56, 56), color)
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_to_data_url(image)}}]}]
        prompt = tiny_agent.encode(messages)
        batch = build_scoring_batch([prompt], [[5]], tiny_agent.tokenizer.pad_token_id, torch.device("cpu"), torch.float32)
        with torch.no_grad():
            return score_completions(tiny_agent.model, batch).logprobs

    assert not torch.allclose(logits_for((255, 0, 0)), logits_for((0, 0, 255)))


@pytest.mark.parametrize("top_p,top_k", [(1.0, 0), (0.9, 20)])
def test_a_seeded_completion_does_not_depend_on_its_batch(tiny_agent, top_p, top_k):
    """Row i's sample is a function of its prompt and seed only: alone, in a batch, in another order."""
    convs = conversations()
    tools = None
    prompts = [tiny_agent.encode(c, tools) for c in convs]
    seeds = [11, 22, 33]
    batch = tiny_agent.generate_encoded(prompts, seeds=seeds, top_p=top_p, top_k=top_k)
    alone = [tiny_agent.generate_encoded([p], seeds=[s], top_p=top_p, top_k=top_k)[0] for p, s in zip(prompts, seeds)]
    reordered = tiny_agent.generate_encoded(prompts[::-1], seeds=seeds[::-1], top_p=top_p, top_k=top_k)[::-1]
    for a, b, c in zip(batch, alone, reordered):
        assert a.completion_ids == b.completion_ids == c.completion_ids
    # and the seed matters: other seeds give other samples (on the 24-token completions of an untrained model)
    other = tiny_agent.generate_encoded(prompts, seeds=[12, 23, 34], top_p=top_p, top_k=top_k)
    assert any(a.completion_ids != o.completion_ids for a, o in zip(batch, other))
