"""Group-relative advantages (GRPO / GSPO): each reward is compared with its scenario's group.

    A_i = (r_i - mean_group(r)) / (std_group(r) + eps)      normalization="group_std"
    A_i =  r_i - mean_group(r)                              normalization="group_mean_only"

std is the population standard deviation (divides by the group size), so a group's advantages
have unit variance. A group whose rewards are all equal carries no learning signal: its
advantages are exactly 0 and it is counted in `stats["zero_variance_groups"]` (worth logging: a
high count means the task is too easy or too hard for the current policy).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = ["AdvantageNormalization", "GroupAdvantages", "group_advantages"]

AdvantageNormalization = Literal["group_std", "group_mean_only"]
_ZERO_STD = 1e-8  # groups with std at or below this are "zero-variance"


class GroupAdvantages(NamedTuple):
    advantages: Tensor  # same shape as the rewards
    stats: dict[str, int]  # {"groups": number of groups, "zero_variance_groups": how many got A = 0}


def group_advantages(
    rewards: Tensor,
    group_ids_B: Tensor | None = None,
    normalization: AdvantageNormalization = "group_std",
    eps: float = 1e-6,
) -> GroupAdvantages:
    """Advantages shaped like `rewards`.

    Either `rewards` is [N, G] (one row per scenario, G samples each) and `group_ids_B` is None,
    or `rewards` is [B] and `group_ids_B` [B] says which rows share a scenario (any int ids).
    """
    if normalization not in ("group_std", "group_mean_only"):
        raise ValueError(f"normalization must be 'group_std' or 'group_mean_only', got {normalization!r}")
    if group_ids_B is None:
        if rewards.dim() != 2:
            raise ValueError(f"without group ids, rewards must be [num_groups, group_size]; got {list(rewards.shape)}")
        group_B = torch.arange(rewards.shape[0], device=rewards.device).repeat_interleave(rewards.shape[1])
    elif rewards.dim() != 1 or group_ids_B.shape != rewards.shape:
        shapes = f"{list(rewards.shape)} and {list(group_ids_B.shape)}"
        raise ValueError(f"rewards and group ids must both be [B]; got {shapes}")
    else:
        group_B = torch.unique(group_ids_B, return_inverse=True)[1].to(rewards.device)
    rewards_B = rewards.reshape(-1).float()
    num_groups = int(group_B.max().item()) + 1 if group_B.numel() else 0

    def group_mean(values_B: Tensor) -> Tensor:  # [B] -> [num_groups]
        sums = torch.zeros(num_groups, device=values_B.device).index_add(0, group_B, values_B)
        return sums / torch.bincount(group_B, minlength=num_groups).clamp(min=1)

    centered_B = rewards_B - group_mean(rewards_B)[group_B]
    std_N = group_mean(centered_B**2).sqrt()
    zero_N = std_N <= _ZERO_STD
    advantages_B = centered_B / (std_N[group_B] + eps) if normalization == "group_std" else centered_B
    advantages_B = torch.where(zero_N[group_B], 0.0, advantages_B)
    stats = {"groups": num_groups, "zero_variance_groups": int(zero_N.sum().item())}
    return GroupAdvantages(advantages_B.reshape(rewards.shape), stats)
