"""Chat formats: turn messages into prompt text, and sampled completion text into its parts.

- `kimi`: Kimi-K2.5's format (`KimiChatFormat`, and `KIMI_CHAT_TEMPLATE` for tokenizers);
- `kimi_tools`: Kimi-K2.5's TypeScript-style tool declaration (`encode_tools_typescript`);
- `generic`: any tokenizer's own template (`GenericChatFormat`);
- `hermes`: the one parser of Hermes/Qwen-style JSON tool calls (tagged or bare);
- `parsing`: what the formats' parsers share (end of turn, think block, finite JSON);
- `base`: the `ChatFormat` protocol.

Parsers work on the decoded text of the sampled ids (special tokens kept) and never raise:
whatever is malformed is recorded in `ParsedCompletion.errors`. Training never re-tokenises
what they return.
"""

from __future__ import annotations

from typing import Any

from stateset_agents.core.formats.base import REASONING_KEYS, ChatFormat, message_reasoning
from stateset_agents.core.formats.generic import GenericChatFormat
from stateset_agents.core.formats.kimi import IM_MIDDLE, KIMI_CHAT_TEMPLATE, KimiChatFormat
from stateset_agents.core.formats.kimi_tools import deep_sort, encode_tools_typescript
from stateset_agents.core.formats.parsing import load_json, parse_completion, token_pattern

__all__ = [
    "KIMI_CHAT_TEMPLATE",
    "REASONING_KEYS",
    "ChatFormat",
    "GenericChatFormat",
    "KimiChatFormat",
    "deep_sort",
    "encode_tools_typescript",
    "get_chat_format",
    "load_json",
    "message_reasoning",
    "parse_completion",
    "token_pattern",
]


def get_chat_format(tokenizer_or_name: Any) -> KimiChatFormat | GenericChatFormat:
    """`KimiChatFormat` for Kimi tokenizers (``<|im_middle|>`` in the vocabulary, or a name that
    mentions kimi); otherwise a `GenericChatFormat` over the tokenizer's own template."""
    if isinstance(tokenizer_or_name, str):
        if "kimi" in tokenizer_or_name.lower():
            return KimiChatFormat()
        raise ValueError(
            f"cannot pick a chat format from the name {tokenizer_or_name!r} alone: "
            "pass the loaded tokenizer so that its own chat template is used"
        )
    name = str(getattr(tokenizer_or_name, "name_or_path", "") or "")
    if _has_token(tokenizer_or_name, IM_MIDDLE) or "kimi" in name.lower():
        return KimiChatFormat()
    return GenericChatFormat(tokenizer_or_name)


def _has_token(tokenizer: Any, token: str) -> bool:
    try:
        return token in tokenizer.get_vocab()
    except Exception:  # noqa: BLE001 - remote-code tokenizers vary; treat as "not there"
        return False
