"""Image preprocessing for Kimi-K2.5's vision tower (MoonViT), without torchvision.

transformers' `Kimi_K25ImageProcessor` needs torchvision, whose PyPI wheels do not load beside a
CPU-only torch build. This module reproduces its pipeline with Pillow + torch so images work on
every install: NaViT resize (never upscale; bound the patch count and the side length), pad
bottom/right to a multiple of `patch_size * merge_size`, rescale to [0, 1], normalise, and cut
into `[num_patches, 3, patch, patch]` patches in row-major order with `grid_thw = (1, h, w)`.
When torchvision is importable, `tests/test_vision.py` checks both give the same tensors.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass
class ImageProcessorSettings:
    """The fields of Kimi's `preprocessor_config.json` that shape the pixels."""

    patch_size: int = 14
    merge_size: int = 2
    max_patches: int = 16384
    max_side: int = 512  # size.max_height == size.max_width in Kimi's config
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def save(self, directory: str | Path) -> None:
        config = {
            "image_processor_type": "Kimi_K25ImageProcessor",
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "max_patches": self.max_patches,
            "size": {"max_height": self.max_side, "max_width": self.max_side},
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
        }
        Path(directory, PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "ImageProcessorSettings":
        """Read a model directory's preprocessor config; defaults when there is none."""
        path = Path(directory, PREPROCESSOR_FILE)
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        defaults = asdict(cls())
        return cls(
            patch_size=raw.get("patch_size", defaults["patch_size"]),
            merge_size=raw.get("merge_size", defaults["merge_size"]),
            max_patches=raw.get("max_patches", defaults["max_patches"]),
            max_side=raw.get("size", {}).get("max_height", defaults["max_side"]),
            image_mean=raw.get("image_mean", defaults["image_mean"]),
            image_std=raw.get("image_std", defaults["image_std"]),
        )


def navit_size(height: int, width: int, settings: ImageProcessorSettings) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized height, width) and (padded height, width), as Kimi's processor computes them."""
    patch = settings.patch_size
    patches_h = max(1.0, height // patch)
    patches_w = max(1.0, width // patch)
    scale = min(
        1.0,
        math.sqrt(settings.max_patches / (patches_h * patches_w)),
        settings.max_side * patch / height,
        settings.max_side * patch / width,
    )
    new_h = min(max(1, int(height * scale)), settings.max_side * patch)
    new_w = min(max(1, int(width * scale)), settings.max_side * patch)
    factor = settings.merge_size * patch
    return (new_h, new_w), (new_h + (factor - new_h % factor) % factor, new_w + (factor - new_w % factor) % factor)


def _image_patches(image: Image.Image, settings: ImageProcessorSettings) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """One image -> patches [h*w, 3, p, p] and its grid (1, h, w)."""
    image = image.convert("RGB")
    (new_h, new_w), (pad_h, pad_w) = navit_size(image.height, image.width, settings)
    if (new_h, new_w) != (image.height, image.width):
        image = image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)  # [3, H, W]
    padded = torch.zeros(3, pad_h, pad_w)
    padded[:, :new_h, :new_w] = pixels
    mean = torch.tensor(settings.image_mean).view(3, 1, 1)
    std = torch.tensor(settings.image_std).view(3, 1, 1)
    normalised = (padded / 255.0 - mean) / std
    p = settings.patch_size
    grid_h, grid_w = pad_h // p, pad_w // p
    patches = normalised.reshape(3, grid_h, p, grid_w, p).permute(1, 3, 0, 2, 4).reshape(grid_h * grid_w, 3, p, p)
    return patches, (1, grid_h, grid_w)


def preprocess_images(
    images: list[Image.Image], settings: ImageProcessorSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> (`pixel_values` [total_patches, 3, p, p], `image_grid_thw` [num_images, 3])."""
    if not images:
        raise ValueError("preprocess_images needs at least one image")
    patches, grids = zip(*(_image_patches(image, settings) for image in images))
    return torch.cat(patches, dim=0), torch.tensor(grids, dtype=torch.long)


def tokens_per_image(grid_thw: torch.Tensor, settings: ImageProcessorSettings) -> list[int]:
    """How many `<|media_pad|>` tokens each image occupies in the language model's input."""
    return (grid_thw.prod(dim=-1) // settings.merge_size**2).tolist()
