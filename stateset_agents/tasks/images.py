"""Deterministic product photos for the multimodal customer-service scenarios.

Scenarios store ``{"kind": "intact" | "damaged", "seed": int}``, never image bytes; `render_photo`
draws the picture again whenever it is needed: a cardboard box on a plain background, and for
``damaged`` a dent plus a jagged red crack. Pictures are small (56x56 by default) so that a tiny
vision tower can read them. The seed varies colours and positions, so no two photos are identical.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw

from stateset_agents.core.messages import image_to_data_url

__all__ = ["PHOTO_SIZE", "render_photo", "scenario_image_url", "scenario_photo"]

PHOTO_SIZE = 56


def render_photo(kind: str, seed: int, size: int = PHOTO_SIZE) -> Image.Image:
    """An RGB picture of a box, intact or damaged, fully determined by (kind, seed, size)."""
    if kind not in ("intact", "damaged"):
        raise ValueError(f"photo kind must be 'intact' or 'damaged', got {kind!r}")
    rng = random.Random(f"photo:{seed}")
    scale = size / PHOTO_SIZE
    background = tuple(rng.randint(200, 240) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.randint(6, 12) * scale, rng.randint(8, 14) * scale
    x1, y1 = x0 + rng.randint(28, 34) * scale, y0 + rng.randint(24, 30) * scale
    box = (rng.randint(150, 175), rng.randint(105, 125), rng.randint(60, 80))
    draw.rectangle((x0, y0, x1, y1), fill=box, outline=(90, 60, 30))
    middle = (x0 + x1) / 2
    draw.rectangle((middle - 2 * scale, y0, middle + 2 * scale, y1), fill=(205, 180, 130))  # tape
    if kind == "damaged":
        dent = [(x1 - 10 * scale, y0), (x1, y0), (x1, y0 + 10 * scale)]
        draw.polygon(dent, fill=background)
        points, x, y = [], x0 + 3 * scale, y0 + rng.randint(4, 10) * scale
        while x < x1 - 3 * scale:
            points.append((x, y))
            x += rng.randint(3, 6) * scale
            y = min(y1 - 2 * scale, max(y0 + 2 * scale, y + rng.choice((-1, 1)) * rng.randint(2, 5) * scale))
        draw.line(points, fill=(220, 20, 20), width=max(2, round(2 * scale)))
    return image


@lru_cache(maxsize=512)
def _photo_url(kind: str, seed: int) -> str:
    return image_to_data_url(render_photo(kind, seed))


def scenario_image_url(scenario: dict[str, Any]) -> str | None:
    """The data URL of the scenario's photo, or None when it has none."""
    image = scenario.get("image")
    return _photo_url(image["kind"], int(image["seed"])) if image else None


def scenario_photo(scenario: dict[str, Any]) -> Image.Image | None:
    """The scenario's photo as a PIL image (e.g. for `TurnSample.images`), or None."""
    image = scenario.get("image")
    return render_photo(image["kind"], int(image["seed"])) if image else None
