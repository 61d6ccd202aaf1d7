"""Conversations -> exact prompt token ids (+ image tensors), and padded model batches.

Every prompt the sampler sees is produced here, and the trainer re-scores the very same ids, so
there is one place that decides how text and images become tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from stateset_agents.core.messages import extract_images
from stateset_agents.models.vision import ImageProcessorSettings, preprocess_images, tokens_per_image

IMAGE_PAD_TOKEN = "<|media_pad|>"


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

    def encode(self, messages: list[dict], tools: list[dict] | None = None, thinking: bool = True) -> EncodedPrompt:
        text = self.chat_format.render(messages, tools=tools, add_generation_prompt=True, thinking=thinking)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        images = extract_images(messages)
        if not images:
            return EncodedPrompt(ids)
        if self.image_settings is None:
            raise ValueError("this model has no vision tower, but the conversation contains images")
        pixel_values, grid_thw = preprocess_images(images, self.image_settings)
        ids = self._expand_image_pads(ids, tokens_per_image(grid_thw, self.image_settings))
        return EncodedPrompt(ids, pixel_values, grid_thw, images)

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
