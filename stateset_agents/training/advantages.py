"""Group-relative advantages (GRPO / GSPO): each reward is compared with its scenario's group.

    A_i = (r_i - mean_group(r)) / (std_group(r) + eps)      normalization="group_std"
    A_i =  r_i - mean_group(r)                              normalization="group_mean_only"

std is the population standard deviation (divides by the group size), so a group's advantages
have unit variance. A group whose rewards are all equal carries no learning signal: its
advantages are exactly 0 and it is counted in `num_zero_variance_groups` (worth logging: a
high count means the task is too easy or too hard for the current policy).

The statistics are computed in float64 (rewards of magnitude 1e30 would overflow float32's
squares and zero every advantage), and the result is returned in the rewards' dtype (float32
for integer rewards). A group whose rewards are not finite, or so large that its spread still
overflows, gets NaN advantages rather than silent zeros, so the caller can detect it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = ["AdvantageNormalization", "GroupAdvantages", "group_advantages", "group_advantages_by_id"]

AdvantageNormalization = Literal["group_std", "group_mean_only"]
_ZERO_STD = 1e-8  # groups with std at or below this are "zero-variance"


class GroupAdvantages(NamedTuple):
    advantages: Tensor  # same shape as the rewards
    num_zero_variance_groups: int


def group_advantages_by_id(
    rewards_B: Tensor,
    group_ids_B: Tensor,
    normalization: AdvantageNormalization = "group_std",
    eps: float = 1e-6,
) -> GroupAdvantages:
    """Advantages [B] for rewards [B], where rows with equal `group_ids_B` form one group."""
    if normalization not in ("group_std", "group_mean_only"):
        raise ValueError(f"normalization must be 'group_std' or 'group_mean_only', got {normalization!r}")
    if rewards_B.dim() != 1 or group_ids_B.shape != rewards_B.shape:
        shapes = (tuple(rewards_B.shape), tuple(group_ids_B.shape))
        raise ValueError(f"rewards and group ids must both be [B]; got {shapes[0]} and {shapes[1]}")
    out_dtype = rewards_B.dtype if rewards_B.is_floating_point() else torch.float32
    rewards_B = rewards_B.double()
    _, group_B = torch.unique(group_ids_B, return_inverse=True)
    num_groups = int(group_B.max().item()) + 1 if group_B.numel() else 0

    def group_mean(values_B: Tensor) -> Tensor:  # [B] -> [num_groups]
        sums = torch.zeros(num_groups, dtype=values_B.dtype, device=values_B.device).index_add(0, group_B, values_B)
        return sums / torch.bincount(group_B, minlength=num_groups).clamp(min=1)

    centered_B = rewards_B - group_mean(rewards_B)[group_B]
    std_N = group_mean(centered_B**2).sqrt()
    zero_N = std_N <= _ZERO_STD
    overflow_N = ~torch.isfinite(std_N)  # non-finite rewards, or a spread beyond float64
    advantages_B = centered_B / (std_N[group_B] + eps) if normalization == "group_std" else centered_B
    advantages_B = torch.where(zero_N[group_B], 0.0, advantages_B)
    advantages_B = torch.where(overflow_N[group_B], float("nan"), advantages_B)
    return GroupAdvantages(advantages_B.to(out_dtype), int(zero_N.sum().item()))


def group_advantages(
    rewards_N_G: Tensor,
    normalization: AdvantageNormalization = "group_std",
    eps: float = 1e-6,
) -> GroupAdvantages:
    """Advantages [N, G] for rewards [N groups, G samples per group] (one row per scenario)."""
    if rewards_N_G.dim() != 2:
        raise ValueError(f"rewards must be [num_groups, group_size], got {tuple(rewards_N_G.shape)}")
    num_groups, group_size = rewards_N_G.shape
    ids_B = torch.arange(num_groups, device=rewards_N_G.device).repeat_interleave(group_size)
    result = group_advantages_by_id(rewards_N_G.reshape(-1), ids_B, normalization, eps)
    return GroupAdvantages(result.advantages.reshape(num_groups, group_size), result.num_zero_variance_groups)
