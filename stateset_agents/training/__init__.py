"""From scored trajectories to new weights, in data-path order: `scenario_sampler` (which scenarios an
iteration plays) -> `advantages` -> `losses` -> `optimizer_step`, then `stateset_agents.runs` (checkpoints,
metrics, report); `trainer` runs the loop, `run_dir` checks the output directory first, `warm_start` is
the supervised warm start."""
