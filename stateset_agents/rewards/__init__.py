"""Rewards: the protocol, components, `MultiObjectiveReward`, and batch scoring."""

from stateset_agents.rewards.base import RewardComponent, RewardError, RewardResult, to_reward_result
from stateset_agents.rewards.components import (
    COMPONENTS,
    DEFAULT_CLAIMS,
    DEFAULT_WEIGHTS,
    Concision,
    Format,
    GoalReached,
    Helpfulness,
    PolicyCompliance,
    ToolUse,
)
from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
from stateset_agents.rewards.multimodal import ImageConsistency
from stateset_agents.rewards.batch_rewards import ScoredBatch, score_trajectories, score_trajectories_sync

__all__ = [
    "RewardComponent", "RewardError", "RewardResult", "to_reward_result", "COMPONENTS", "DEFAULT_CLAIMS",
    "DEFAULT_WEIGHTS", "Concision", "Format", "GoalReached", "Helpfulness", "PolicyCompliance", "ToolUse",
    "MultiObjectiveReward", "ImageConsistency", "ScoredBatch", "score_trajectories", "score_trajectories_sync",
]
