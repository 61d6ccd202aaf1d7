"""Group advantages against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from stateset_agents.training.advantages import group_advantages, group_advantages_by_id


def test_binary_pair_gives_plus_minus_one():
    # mean 0.5, population std 0.5 -> A = (+-0.5) / 0.5 = +-1 (up to eps)
    result = group_advantages(torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(result.advantages, torch.tensor([[-1.0, 1.0]]), atol=1e-5, rtol=0)
    assert result.num_zero_variance_groups == 0


def test_group_std_by_hand():
    # r = [1, 2, 3, 6]: mean 3, deviations [-2, -1, 0, 3], var = (4 + 1 + 0 + 9) / 4 = 3.5, std 1.8708
    std = math.sqrt(3.5)
    result = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 6.0]]), eps=0.0)
    torch.testing.assert_close(result.advantages, torch.tensor([[-2 / std, -1 / std, 0.0, 3 / std]]))
    assert result.advantages.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert result.advantages.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_mean_only():
    result = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 6.0]]), normalization="group_mean_only")
    torch.testing.assert_close(result.advantages, torch.tensor([[-2.0, -1.0, 0.0, 3.0]]))


@pytest.mark.parametrize("normalization", ["group_std", "group_mean_only"])
def test_zero_variance_groups_get_zero_and_are_counted(normalization):
    rewards = torch.tensor([[0.1, 0.1, 0.1], [0.0, 0.0, 1.0], [5.0, 5.0, 5.0]])
    result = group_advantages(rewards, normalization=normalization)
    assert torch.all(result.advantages[0] == 0) and torch.all(result.advantages[2] == 0)
    assert result.advantages[1, 2] > 0 > result.advantages[1, 0]
    assert result.num_zero_variance_groups == 2


def test_group_ids_in_any_order():
    # group 7: [1, 3, 2] -> mean 2, std sqrt(2/3) = 0.8165 -> [-1.2247, 1.2247, 0]; group 3: [10, 10] -> 0
    rewards = torch.tensor([1.0, 10.0, 3.0, 10.0, 2.0])
    ids = torch.tensor([7, 3, 7, 3, 7])
    result = group_advantages_by_id(rewards, ids, eps=0.0)
    a = 1 / math.sqrt(2 / 3)
    torch.testing.assert_close(result.advantages, torch.tensor([-a, 0.0, a, 0.0, 0.0]))
    assert result.num_zero_variance_groups == 1


def test_grid_and_id_forms_agree():
    rewards = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    grid = group_advantages(rewards).advantages
    by_id = group_advantages_by_id(rewards.reshape(-1), torch.arange(4).repeat_interleave(8)).advantages
    torch.testing.assert_close(grid.reshape(-1), by_id)


def test_bad_inputs():
    with pytest.raises(ValueError, match="normalization must be"):
        group_advantages(torch.zeros(1, 2), normalization="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[num_groups, group_size\]"):
        group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="must both be"):
        group_advantages_by_id(torch.zeros(4), torch.zeros(3))


def test_huge_rewards_keep_their_signal():
    # float32 squares of 1e30 overflow: the std became inf and every advantage silently 0
    result = group_advantages(torch.tensor([[1e30, -1e30], [3e30, 1e30]]))
    torch.testing.assert_close(result.advantages, torch.tensor([[1.0, -1.0], [1.0, -1.0]]), atol=1e-5, rtol=0)
    assert result.advantages.dtype == torch.float32


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e200])
def test_groups_that_overflow_get_nan_not_zero(bad):
    # 1e200 is finite in float64 but its squared deviation is not; the other group is untouched
    rewards = torch.tensor([[bad, -bad if bad == 1e200 else 0.0], [0.0, 1.0]], dtype=torch.float64)
    result = group_advantages(rewards)
    assert torch.isnan(result.advantages[0]).all()
    torch.testing.assert_close(result.advantages[1], torch.tensor([-1.0, 1.0], dtype=torch.float64), atol=1e-5, rtol=0)
    assert result.num_zero_variance_groups == 0
