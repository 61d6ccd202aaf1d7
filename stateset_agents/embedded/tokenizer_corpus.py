"""What the embedded model's tokenizer is trained on: the tasks' scripted dialogues.

The text is the dialogues rendered in Kimi's format (so the BPE merges learn the strings the model
actually reads, and prompts stay short), and the whole words are the tasks' tool arguments the
agent must copy. This sits above the tasks and the model builder (`models.tiny_kimi`), which takes
both as arguments; its code is part of the base model's build fingerprint.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from stateset_agents.core.formats import KimiChatFormat
from stateset_agents.tasks.episodes import generate_reference_dialogues
from stateset_agents.tasks.registry import WARM_START_TASKS

__all__ = ["default_tokenizer_corpus", "tool_argument_words"]


@lru_cache(maxsize=2)
def _tokenizer_dialogues(dialogues_per_task: int = 100) -> tuple[dict, ...]:
    """Scripted dialogues of every task; the tokenizer's merges and whole words are learned from them
    (cached: a build asks twice)."""
    return tuple(dialogue for offset, name in enumerate(WARM_START_TASKS)
                 for dialogue in generate_reference_dialogues(name, dialogues_per_task, seed=1000 + offset))


def default_tokenizer_corpus(dialogues_per_task: int = 100) -> list[str]:
    """Text the BPE merges are learned from: scripted task dialogues rendered in Kimi's format.

    Rendering whole conversations (tool declarations, system prompts, user replies, tool results)
    teaches the merges the strings the model actually reads, so prompts stay short.
    """
    chat_format = KimiChatFormat()
    return [chat_format.render(dialogue["messages"], tools=dialogue["tools"], add_generation_prompt=False)
            for dialogue in _tokenizer_dialogues(dialogues_per_task)]


def tool_argument_words(dialogues_per_task: int = 100) -> list[str]:
    """Words the agent copies from the conversation into tool arguments (``laptop``, ``billing``,
    ``east``): the tasks' string arguments that contain no digits, sorted."""
    words = set()
    for dialogue in _tokenizer_dialogues(dialogues_per_task):
        for message in dialogue["messages"]:
            for call in message.get("tool_calls") or []:
                for value in json.loads(call["function"]["arguments"]).values():
                    if isinstance(value, str) and re.fullmatch(r"[a-z]+", value):
                        words.add(value)
    return sorted(words)
