"""A reward that looks at the image the customer attached (the multimodal example).

`ImageConsistency` decodes the first image in the user's messages (a ``data:`` URL in an
``image_url`` part), decides whether it shows damage (a red crack: enough strongly red pixels),
and checks the agent's action against it: a successful ``issue_refund`` is right for a damaged
item and wrong for an intact one (the photo scenarios are outside the return window). Trajectories
without an image score 1.0 (nothing to check). This is a deliberately simple vision "judge": the
point is that rewards receive images through ``trajectory.messages``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from stateset_agents.core.trajectory import Trajectory
from stateset_agents.rewards.components import trajectory_actions

__all__ = ["ImageConsistency", "first_image", "shows_damage"]


def first_image(messages: list[dict[str, Any]]) -> Image.Image | None:
    """The first ``data:`` image in a user message, decoded; None when there is none."""
    for message in messages:
        if message.get("role") != "user" or not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            url = part.get("image_url", {}).get("url", "") if part.get("type") == "image_url" else ""
            if url.startswith("data:") and "," in url:
                return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    return None


def shows_damage(image: Image.Image, min_fraction: float = 0.01) -> bool:
    """At least `min_fraction` of the pixels are strongly red (the crack drawn on damaged items)."""
    data = image.convert("RGB").tobytes()
    red = sum(1 for i in range(0, len(data), 3) if data[i] > 170 and data[i + 1] < 90 and data[i + 2] < 90)
    return red >= min_fraction * (len(data) // 3)


class ImageConsistency:
    """1 when the refund decision matches what the photo shows, else 0 (1 without a photo)."""

    name = "image_consistency"

    def __init__(self, action_tool: str = "issue_refund") -> None:
        self.action_tool = action_tool

    def __call__(self, trajectory: Trajectory) -> float:
        image = first_image(trajectory.messages)
        if image is None:
            return 1.0
        acted = any(a.get("ok") and a.get("tool") == self.action_tool for a in trajectory_actions(trajectory))
        return float(acted == shows_damage(image))
