"""Regenerate the shipped scenario files: ``python -m stateset_agents.tasks.generate_data``.

For each task, one seeded `random.Random` draws every scenario of the train split, then the eval
split; ids (orders, devices, SKUs...) are never reused, so the splits share no scenario and no
hidden fact. Families rotate within each split so both cover every family. Output is canonical
JSONL (sorted keys), so re-running reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from stateset_agents.tasks.base import DATA_DIR, Task, UniqueIds
from stateset_agents.tasks.registry import get_task
from stateset_agents.tasks.scenario_records import dump_jsonl

__all__ = ["SEED", "SPLIT_SIZES", "BUILTIN_TASKS", "generate_task", "generate_all", "fresh_scenarios"]

SEED = 20250601
SPLIT_SIZES = {"train": 60, "eval": 30}
BUILTIN_TASKS = ("customer_service", "technical_support", "sales", "customer_service_claims",
                 "customer_service_partner")


def generate_task(task: Task, seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """All splits of one task: ``{"train": [...], "eval": [...]}``."""
    rng = random.Random(f"{task.name}:{seed}")
    ids = UniqueIds(rng)
    splits: dict[str, list[dict]] = {}
    for split, size in (sizes or SPLIT_SIZES).items():
        splits[split] = [task.build_scenario(rng, ids, task.families[i % len(task.families)],
                                             f"{task.id_prefix}-{split}-{i:03d}") for i in range(size)]
    return splits


def _strings(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*map(_strings, value.values()), *map(_strings, value.keys()))
    if isinstance(value, (list, tuple)):
        return set().union(*map(_strings, value))
    return set()


def fresh_scenarios(task: Task, n: int, seed: int) -> list[dict]:
    """`n` new scenarios of `task` (families rotating) that share no id with the shipped splits.

    For the warm start: dialogues on ever-new order numbers, devices and SKUs teach the model to
    copy ids from the conversation; a few fixed scenarios would let it memorise them instead.
    """
    rng = random.Random(f"{task.name}:fresh:{seed}")
    shipped = set().union(*(_strings(task.scenarios(split)) for split in SPLIT_SIZES))
    scenarios = []
    for i in range(n):  # ids are unique within a scenario and never one of the shipped splits'
        ids = UniqueIds(rng)
        ids.used |= shipped
        scenarios.append(task.build_scenario(rng, ids, task.families[i % len(task.families)],
                                             f"{task.id_prefix}-fresh-{i:05d}"))
    return scenarios


def generate_all(out_dir: str | Path = DATA_DIR, seed: int = SEED) -> list[Path]:
    """Write ``{task}_{split}.jsonl`` for every built-in task; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in BUILTIN_TASKS:
        for split, scenarios in generate_task(get_task(name), seed).items():
            path = out / f"{name}_{split}.jsonl"
            path.write_text(dump_jsonl(scenarios), encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(DATA_DIR), help="where to write the JSONL files")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for path in generate_all(args.out_dir, args.seed):
        print(path)


if __name__ == "__main__":
    main()
