"""Checks on a run's output directory, made before anything is loaded or written.

A run directory holds one run: its `config.yaml` is the run's definition and its checkpoints
continue only that run. So, before the model loads:

- the directory must be creatable (an existing file in the path, or no write permission, is an
  error now, not after a model has loaded for minutes);
- a fresh run (`resume=False`) refuses a directory that already holds checkpoints: it would
  overwrite that run's config and prune its checkpoints;
- a resumed run must match the saved config. Only `RESUMABLE_FIELDS` (logging, evaluation and
  checkpoint cadence, and more iterations where the schedule allows) may change; any other
  difference is refused with the list of differences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stateset_agents.runs.checkpoints import latest_checkpoint
from stateset_agents.training.config import TrainingConfig

__all__ = ["RESUMABLE_FIELDS", "RunDirectoryError", "check_run_directory", "saved_run_config"]

CONFIG_FILENAME = "config.yaml"
# what a resume may change: none of these alters the weights the run ends with
RESUMABLE_FIELDS = frozenset({
    "resume", "num_outer_iterations", "task_iterations", "report_to", "wandb_project", "wandb_run_name",
    "eval_every", "eval_scenarios", "save_every", "log_every",
})


class RunDirectoryError(ValueError):
    """The output directory cannot take this run (see the message for what to do)."""


def saved_run_config(output_dir: str | Path) -> TrainingConfig | None:
    """The config saved by an earlier run in `output_dir`, or None if there is none."""
    path = Path(output_dir) / CONFIG_FILENAME
    if not path.is_file():
        return None
    return TrainingConfig.from_file(path)


def check_run_directory(config: TrainingConfig) -> list[str]:
    """Raise `RunDirectoryError` if `config` cannot run in its output_dir; returns the accepted
    changes of a resume as "field: saved -> now" lines (empty for a fresh run)."""
    output_dir = Path(config.output_dir)
    _check_creatable(output_dir)
    checkpoint = latest_checkpoint(output_dir)
    if not config.resume:
        if checkpoint is not None:
            raise RunDirectoryError(
                f"{output_dir} already holds a run (checkpoint {checkpoint.name}); a new run there would overwrite "
                f"its config and checkpoints. Continue it with --resume (resume: true), or pick another --output-dir."
            )
        return []
    saved = saved_run_config(output_dir)
    if saved is None:
        return []
    differences = _differences(saved, config)
    refused = {name: change for name, change in differences.items() if name not in RESUMABLE_FIELDS}
    refused.update(_iteration_change_problems(saved, config, checkpoint))
    if refused:
        lines = "; ".join(f"{name}: {change}" for name, change in refused.items())
        raise RunDirectoryError(
            f"--resume: these settings differ from the run saved in {output_dir / CONFIG_FILENAME}: {lines}. "
            f"Drop those flags to continue the run as it was configured, or train the new settings in another "
            f"--output-dir. (A resume may change only {', '.join(sorted(RESUMABLE_FIELDS - {'resume'}))}.)"
        )
    return [f"{name}: {change}" for name, change in differences.items() if name != "resume"]


def _check_creatable(output_dir: Path) -> None:
    existing = output_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise RunDirectoryError(f"output_dir {output_dir} cannot be created: {existing} is a file, not a directory. "
                                f"Pass another --output-dir.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"output_dir {output_dir} cannot be created: {existing} is not writable. "
                                f"Pass a --output-dir you can write to.")


def _differences(saved: TrainingConfig, config: TrainingConfig) -> dict[str, str]:
    before, after = saved.model_dump(mode="json"), config.model_dump(mode="json")
    return {name: f"saved {short_repr(before[name])}, now {short_repr(after[name])}"
            for name in TrainingConfig.model_fields if before[name] != after[name]}


def _iteration_change_problems(saved: TrainingConfig, config: TrainingConfig, checkpoint: Path | None) -> dict:
    """More (or fewer) iterations on resume: only where the run's course so far stays valid."""
    if (saved.num_outer_iterations, saved.task_iterations) == (config.num_outer_iterations, config.task_iterations):
        return {}
    change = f"saved {saved.num_outer_iterations}, now {config.num_outer_iterations}"
    if saved.task_iterations != config.task_iterations:
        change += f" (task_iterations saved {saved.task_iterations}, now {config.task_iterations})"
    done = int(checkpoint.name.split("_")[1]) if checkpoint is not None else 0
    if config.num_outer_iterations < done:
        return {"num_outer_iterations": f"{change}, but the checkpoint is already at iteration {done}"}
    if config.lr_scheduler != "constant":
        return {"num_outer_iterations": f"{change}, but the {config.lr_scheduler} learning-rate schedule is "
                                        f"spread over the run's length (a new length would jump the schedule)"}
    counts = (saved.task_iterations, config.task_iterations)
    only_the_last_task_changes = None not in counts and counts[0][:-1] == counts[1][:-1]
    if len(config.task_sequence) > 1 and not only_the_last_task_changes:
        return {"num_outer_iterations": f"{change}, but that moves a task boundary (without task_iterations the "
                                        f"tasks share the iterations equally); with task_iterations, change only "
                                        f"the last task's count"}
    return {}


def short_repr(value: Any, width: int = 60) -> str:
    """`repr(value)`, cut to `width` characters (long prompts stay readable in one-line messages)."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
