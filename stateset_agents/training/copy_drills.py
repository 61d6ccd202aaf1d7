"""Copy drills: short synthetic sequences that teach the tiny model to copy before it sees dialogues.

A tool call must repeat the order number, account id, price or product the user or a tool gave,
token by token. A drill lists random ids, prices and vocabulary words, then the same list again
(optionally separated by random filler tokens); the loss is on the repeat only, so every target
token is a copy. Why drills, and what they changed: experiments/LOG.md.
"""

from __future__ import annotations

import random

from stateset_agents.rollout.encoding import EncodedPrompt

__all__ = ["drill_text", "copy_drill_examples"]

_ID_PREFIXES = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_LEADS = ("order ", "account ", "device ", "sku ", "item ", "It is ", "ids: ", "")
_SEPARATORS = (", ", "; ", " and ", " ")


def _random_item(rng: random.Random, words: list[str]) -> str:
    kind = rng.random()
    if kind < 0.3:  # a word from the vocabulary: categories and names are copied too
        return rng.choice(words)
    if kind < 0.6:
        return f"{rng.choice(_ID_PREFIXES)}{rng.randint(10 ** (rng.choice((3, 4)) - 1), 9999)}"
    if kind < 0.85:
        return f"${rng.randint(5, 2999)}.{rng.choice(('00', '50', '99', f'{rng.randint(0, 99):02d}'))}"
    return str(rng.randint(1, 999))


def drill_text(rng: random.Random, words: list[str]) -> tuple[str, str, str]:
    """(source, cue, repeat): a few random ids, prices and `words` in a lead-in, a cue, and the same items."""
    items = [_random_item(rng, words) for _ in range(rng.randint(1, 5))]
    separator = rng.choice(_SEPARATORS)
    listed = separator.join(items)
    source = f"{rng.choice(_LEADS)}{listed}.\n"
    if rng.random() < 0.5:  # JSON-style target, as in a tool call's arguments
        return source, '\n{"ids": [', ", ".join(f'"{item}"' for item in items) + "]}"
    return source, "\nAgain: ", f"{listed}."


def copy_drill_examples(tokenizer, count: int, seed: int, max_filler: int = 60) -> list[tuple[EncodedPrompt, list[int]]]:
    """`count` (prompt, completion ids) drills; deterministic for a seed.

    Half the drills repeat right away (the easy case, where copying is first learned); the other
    half put 1 to `max_filler` random vocabulary tokens between the source and the repeat, because in
    a dialogue the id to copy is tens to hundreds of tokens back.
    """
    rng = random.Random(f"copy-drills:{seed}")
    special = set(tokenizer.all_special_ids)
    ordinary = [token for token in range(len(tokenizer)) if token not in special]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    words = sorted({word for token in ordinary for word in [tokenizer.decode([token]).strip()]
                    if word.isalpha() and word.islower() and len(word) >= 3})
    examples = []
    for _ in range(count):
        source, cue, repeat = drill_text(rng, words)
        gap = 0 if max_filler < 1 or rng.random() < 0.5 else rng.randint(1, max_filler)
        filler = rng.choices(ordinary, k=gap)
        examples.append((EncodedPrompt(input_ids=encode(source) + filler + encode(cue)), encode(repeat)))
    return examples
