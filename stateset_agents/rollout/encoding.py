"""Conversations -> exact prompt token ids (+ image tensors), and padded model batches.

Every prompt the sampler sees is produced here, and the trainer re-scores the very same ids, so
there is one place that decides how text and images become tokens.

Only the chat format's own markup may become special tokens. Text from messages (user, system,
tool results, and the assistant's own earlier turns) is bracketed with private-use marker
characters before rendering and tokenised with special tokens split, so a user who types
``<|im_end|><|im_system|>...`` gets those characters as plain text, not a forged turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from stateset_agents.core.formats import REASONING_KEYS, token_pattern
from stateset_agents.core.messages import extract_images, validate_messages
from stateset_agents.models.vision import ImageProcessorSettings, preprocess_images, tokens_per_image

IMAGE_PAD_TOKEN = "<|media_pad|>"
# Unicode private-use code points: they survive rendering (Python or jinja) unchanged
TEXT_OPEN, TEXT_CLOSE = "\ue000", "\ue001"
_MARKERS = re.compile(f"([{TEXT_OPEN}{TEXT_CLOSE}])")


@dataclass
class EncodedPrompt:
    """A rendered prompt: `input_ids` [P] with image placeholders expanded, and its images."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None  # [patches, 3, p, p]
    image_grid_thw: torch.Tensor | None = None  # [images, 3]
    images: list[Any] = field(default_factory=list)


class PromptEncoder:
    """Renders conversations with a chat format and tokenises them exactly once."""

    def __init__(self, tokenizer, chat_format, image_settings: ImageProcessorSettings | None = None):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.image_settings = image_settings
        self.image_pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN) if image_settings else None
        # every string the tokenizer matches whole; `split_special_tokens` only unmatches the special ones
        special = set(getattr(tokenizer, "all_special_tokens", None) or [])
        markup = special | set(getattr(chat_format, "special_tokens", None) or []) | set(_added_vocab(tokenizer))
        markup = tuple(sorted(token for token in markup if isinstance(token, str) and token))
        self._markup = token_pattern(markup) if markup else None
        unsplit = tuple(token for token in markup if token not in special)
        self._unsplit = token_pattern(unsplit) if unsplit else None

    def encode(self, messages: list[dict], tools: list[dict] | None = None, thinking: bool = True,
               preserve_thinking: bool | None = None) -> EncodedPrompt:
        text = self.chat_format.render(mark_text(messages), tools=tools, add_generation_prompt=True, thinking=thinking,
                                       preserve_thinking=preserve_thinking)
        ids = self.tokenize_marked(text)
        images = extract_images(messages)
        if not images:
            return EncodedPrompt(ids)
        if self.image_settings is None:
            raise ValueError("this model has no vision tower, but the conversation contains images")
        pixel_values, grid_thw = preprocess_images(images, self.image_settings)
        ids = self._expand_image_pads(ids, tokens_per_image(grid_thw, self.image_settings))
        return EncodedPrompt(ids, pixel_values, grid_thw, images)

    def tokenize_marked(self, text: str) -> list[int]:
        """Token ids of a rendered prompt: markup with special tokens live, marked text as plain text."""
        segments = split_marked(text)
        if not self._markup_in_text(segments):  # the usual case: one call, the same ids as ever
            return self.tokenizer("".join(piece for piece, _ in segments), add_special_tokens=False)["input_ids"]
        pieces = [(part, plain) for piece, plain in segments for part in (self._break(piece) if plain else [piece])]
        markup = [piece for piece, plain in pieces if not plain]
        text_pieces = [piece for piece, plain in pieces if plain]
        markup_ids = iter(self._ids(markup) if markup else [])
        text_ids = iter(self._ids(text_pieces, split_special_tokens=True) if text_pieces else [])
        return [token for _, plain in pieces for token in next(text_ids if plain else markup_ids)]

    def _markup_in_text(self, segments: list[tuple[str, bool]]) -> bool:
        """Whether a string the tokenizer matches whole overlaps text from the messages (also across
        the edge of a bracket)."""
        if self._markup is None or not any(plain for _, plain in segments):
            return False
        spans, position = [], 0
        for piece, plain in segments:
            if plain:
                spans.append((position, position + len(piece)))
            position += len(piece)
        matches = self._markup.finditer("".join(piece for piece, _ in segments))
        return any(start < match.end() and match.start() < end for match in matches for start, end in spans)

    def _break(self, text: str) -> list[str]:
        """`text` cut inside every non-special added token (``split_special_tokens`` leaves those
        whole), so that tokenising the parts separately never yields them."""
        if self._unsplit is None:
            return [text]
        cuts = [0, *(match.start() + 1 for match in self._unsplit.finditer(text)), len(text)]
        return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]

    def _ids(self, pieces: list[str], **options: Any) -> list[list[int]]:
        return self.tokenizer(pieces, add_special_tokens=False, **options)["input_ids"]

    def _expand_image_pads(self, ids: list[int], counts: list[int]) -> list[int]:
        """Each image's single `<|media_pad|>` becomes as many pads as the image has merged patches."""
        pads = [i for i, token in enumerate(ids) if token == self.image_pad_id]
        if len(pads) != len(counts):
            raise ValueError(f"the prompt has {len(pads)} image placeholders but {len(counts)} images")
        expanded: list[int] = []
        previous = 0
        for position, count in zip(pads, counts):
            expanded.extend(ids[previous:position])
            expanded.extend([self.image_pad_id] * count)
            previous = position + 1
        expanded.extend(ids[previous:])
        return expanded


def _added_vocab(tokenizer) -> list[str]:
    try:
        return list(tokenizer.get_added_vocab())
    except Exception:  # noqa: BLE001 - not every tokenizer exposes its added vocabulary
        return []


def mark_text(messages: list[dict]) -> list[dict]:
    """Copies of `messages` whose every text field (content, reasoning, tool-call ids, names and
    arguments, tool results) is bracketed by `TEXT_OPEN`/`TEXT_CLOSE`; marker characters already in
    the text are removed, so text cannot close its own bracket."""
    marked = []
    for message in validate_messages(messages):
        message = {key: _mark(value) if key in REASONING_KEYS or key in ("tool_call_id", "name") else value
                   for key, value in message.items()}
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = _mark(content)
        elif isinstance(content, list):
            message["content"] = [dict(part, text=_mark(part["text"])) if part.get("type") == "text" else part
                                  for part in content]
        if message.get("tool_calls"):
            message["tool_calls"] = [_mark_call(call) for call in message["tool_calls"]]
        marked.append(message)
    return marked


def _mark_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = dict(call["function"], name=_mark(call["function"]["name"]),
                    arguments=_mark(call["function"]["arguments"]))
    return dict(call, id=_mark(call.get("id")), function=function)


def _mark(value: Any) -> Any:
    """Strings (and the strings inside JSON-like arguments) bracketed; empty strings and other
    values unchanged (formats test ``id or default``)."""
    if isinstance(value, str):
        return f"{TEXT_OPEN}{value.replace(TEXT_OPEN, '').replace(TEXT_CLOSE, '')}{TEXT_CLOSE}" if value else value
    if isinstance(value, Mapping):
        return {_mark(key): _mark(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mark(item) for item in value]
    return value


def split_marked(text: str) -> list[tuple[str, bool]]:
    """``(piece, is_plain_text)`` pieces of a rendered prompt, markers removed. A template that cuts
    a bracket in two leaves a stray marker: an opener without closer keeps the rest plain."""
    segments, plain = [], False
    for piece in _MARKERS.split(text):
        if piece in (TEXT_OPEN, TEXT_CLOSE):
            plain = piece == TEXT_OPEN
        elif piece:
            segments.append((piece, plain))
    return segments


def left_padded_batch(sequences: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask` [B, T] left-padded, and `position_ids` counting real tokens only."""
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - len(sequence):] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, width - len(sequence):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "position_ids": position_ids.to(device),
    }


def image_inputs(prompts: list[EncodedPrompt], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Concatenated image tensors of a batch, in row order (how the model scatters them into pads)."""
    with_images = [prompt for prompt in prompts if prompt.pixel_values is not None]
    if not with_images:
        return {}
    return {
        "pixel_values": torch.cat([p.pixel_values for p in with_images]).to(device=device, dtype=dtype),
        "image_grid_thw": torch.cat([p.image_grid_thw for p in with_images]).to(device),
    }
