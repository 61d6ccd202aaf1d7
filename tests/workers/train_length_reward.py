"""Train the tiny model with a reward that varies within groups; run by tests as one process or under
`accelerate launch` / `torchrun` (tests/test_distributed.py). Usage: train_length_reward.py CONFIG.json"""

from __future__ import annotations

import json
import sys

from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
from stateset_agents.training.config import TrainingConfig
from stateset_agents.training.trainer import GSPOTrainer


class EvenTokenReward(MultiObjectiveReward):
    """The share of even token ids in the first turn: differs between a group's episodes."""

    async def compute_reward(self, trajectory):
        ids = trajectory.turns[0].completion_ids
        return sum(token % 2 == 0 for token in ids) / max(len(ids), 1)


if __name__ == "__main__":
    config = TrainingConfig(**json.loads(open(sys.argv[1]).read()))
    GSPOTrainer(config, reward_fn=EvenTokenReward()).train()
