"""What a training run leaves on disk: atomic checkpoints, metrics (console / metrics.jsonl / W&B), the report.

The last stage of the data path (scenario -> environment -> rollout -> reward -> advantages -> loss
-> step -> checkpoint/metrics); nothing here imports the rest of the package.
"""
