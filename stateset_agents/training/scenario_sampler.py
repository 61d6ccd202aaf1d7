"""Which scenarios each iteration trains on: seeded, without replacement within an epoch.

The sampler's state is a small dict, saved in checkpoints so a resumed run draws the same
scenarios as an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import Any


class ScenarioSampler:
    """Draws scenarios from a list in shuffled epochs (every scenario once before any repeats)."""

    def __init__(self, scenarios: list[dict[str, Any]], seed: int):
        if not scenarios:
            raise ValueError("ScenarioSampler needs at least one scenario")
        self.scenarios = scenarios
        self._rng = random.Random(seed)
        self._queue: list[int] = []

    def sample(self, count: int) -> list[dict[str, Any]]:
        drawn = []
        for _ in range(count):
            if not self._queue:
                self._queue = list(range(len(self.scenarios)))
                self._rng.shuffle(self._queue)
            drawn.append(self.scenarios[self._queue.pop()])
        return drawn

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss], "queue": list(self._queue)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._queue = list(state["queue"])
