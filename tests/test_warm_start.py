"""Warm-start data: copy drills and per-turn examples (the training itself is covered by the slow guide tests)."""

from __future__ import annotations

import random

import pytest

from stateset_agents.core.formats import get_chat_format
from stateset_agents.rollout.encoding import PromptEncoder
from stateset_agents.tasks.episodes import generate_reference_dialogues
from stateset_agents.tasks.registry import get_task
from stateset_agents.training.copy_drills import copy_drill_examples
from stateset_agents.training.warm_start import length_bucketed_batches, turn_examples


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_copy_drills_repeat_exactly_what_the_prompt_listed(tokenizer):
    drills = copy_drill_examples(tokenizer, 200, seed=3, max_filler=10)
    assert len(drills) == 200
    for prompt, completion in drills:
        source = tokenizer.decode(prompt.input_ids)
        repeat = tokenizer.decode(completion)
        items = [item.strip('"[]{}.') for item in repeat.replace(";", ",").replace(" and ", ", ").split(", ")]
        items = [piece for item in items for piece in item.split()]
        assert items and all(item in source for item in items), (source, repeat)
    with_digits = sum(any(ch.isdigit() for ch in tokenizer.decode(completion)) for _, completion in drills)
    assert 0.6 * len(drills) < with_digits < len(drills)  # mostly ids and prices, some words


def test_copy_drills_are_deterministic_and_seeded(tokenizer):
    first = copy_drill_examples(tokenizer, 20, seed=0)
    again = copy_drill_examples(tokenizer, 20, seed=0)
    other = copy_drill_examples(tokenizer, 20, seed=1)
    assert [(p.input_ids, c) for p, c in first] == [(p.input_ids, c) for p, c in again]
    assert [c for _, c in first] != [c for _, c in other]


def test_filler_keeps_special_tokens_out(tokenizer):
    special = set(tokenizer.all_special_ids)
    for prompt, completion in copy_drill_examples(tokenizer, 50, seed=0, max_filler=60):
        assert not special & set(prompt.input_ids + completion)


def test_length_bucketed_batches_cover_every_example_once():
    lengths = [random.Random(i).randint(5, 300) for i in range(203)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(203))
    assert all(len(batch) <= 16 for batch in batches)


def test_turn_examples_target_each_assistant_turn(tokenizer):
    task = get_task("customer_service")
    dialogue = generate_reference_dialogues(task, 1, seed=0, mix={"oracle": 1.0})[0]
    encoder = PromptEncoder(tokenizer, get_chat_format(tokenizer))
    examples = turn_examples(task, dialogue["messages"], encoder)
    assistant = [m for m in dialogue["messages"] if m["role"] == "assistant"]
    assert len(examples) == len(assistant)
    for (prompt, completion), message in zip(examples, assistant):
        text = tokenizer.decode(completion)
        assert message["reasoning_content"] in text and text.endswith("<|im_end|>")
        for call in message.get("tool_calls") or []:
            assert call["function"]["name"] in text


def test_turn_examples_leave_out_mistyped_turns(tokenizer):
    task = get_task("technical_support")
    dialogue = next(d for d in generate_reference_dialogues(task, 20, seed=0, mix={"mediocre": 1.0})
                    if d["mistyped_turns"])
    encoder = PromptEncoder(tokenizer, get_chat_format(tokenizer))
    every = turn_examples(task, dialogue["messages"], encoder)
    kept = turn_examples(task, dialogue["messages"], encoder, dialogue["mistyped_turns"])
    (skipped,) = dialogue["mistyped_turns"]
    assert len(kept) == len(every) - 1
    assert [c for _, c in kept] == [c for i, (_, c) in enumerate(every) if i != skipped]
