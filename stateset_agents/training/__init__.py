"""Layer 6: from scored trajectories to new weights, in data-path order: `scenario_sampler` (which
scenarios an iteration plays) -> `advantages` -> `losses` -> `update` (the optimizer step) ->
`checkpoint` and `metrics` / `report`; `trainer` runs the loop, `warm_start` the supervised warm start."""
