"""Episode records: exact tokens for the trainer, messages and state for rewards.

Multi-turn episodes are stored as one `TurnSample` per assistant turn ("per-turn samples"):
each holds the exact prompt ids the sampler saw and the exact ids it sampled. Kimi's template
rewrites history (earlier think blocks are emptied), so a full-conversation re-render is not a
prefix of what the model saw; per-turn samples keep training token-exact (DESIGN.md invariant 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stateset_agents.core.completion import ParsedCompletion


@dataclass
class TurnSample:
    """One sampled assistant turn.

    - `prompt_ids`: [P] token ids of the rendered conversation up to the generation prompt.
    - `completion_ids`: [C] sampled token ids, including the end-of-turn token if sampled.
    - `logprobs`: [C] sampling log-probabilities log softmax(raw_logits / temperature).
    - `images`: images referenced by the prompt, in placeholder order (PIL images).
    - `temperature`: the temperature of those logprobs (the trainer scores the turn at the same
      one); None for turns no model sampled (scripted agents).
    - `policy_version`: optimizer steps the sampling policy had taken; None when unknown.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    parsed: ParsedCompletion
    images: list[Any] = field(default_factory=list)
    pixel_values: Any = None  # [patches, 3, p, p] tensor for the prompt's images, if any
    image_grid_thw: Any = None  # [images, 3]
    temperature: float | None = None
    policy_version: int | None = None

    @property
    def num_completion_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass
class Trajectory:
    """A finished episode.

    - `messages`: the whole conversation (system, user, assistant, tool), images included.
    - `turns`: the assistant's sampled turns, in order.
    - `state`: the environment's final state (what rewards check the goal against).
    - `scenario`: the scenario the episode was reset with (a dict).
    - `reward` / `reward_components`: filled in by the reward function.
    """

    messages: list[dict[str, Any]]
    turns: list[TurnSample]
    state: dict[str, Any]
    scenario: dict[str, Any]
    task: str = ""
    group_id: int = 0
    end_reason: str = ""
    reward: float = 0.0
    reward_components: dict[str, float] = field(default_factory=dict)

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def num_completion_tokens(self) -> int:
        return sum(turn.num_completion_tokens for turn in self.turns)

    @property
    def num_cut_off_turns(self) -> int:
        """Turns that never sampled the end-of-turn token: cut off at max_new_tokens."""
        return sum(not turn.parsed.terminated for turn in self.turns)
