"""Where does one iteration of our trainer spend its time? cProfile of a few iterations.

    python benchmarks/profile_iteration.py [--model tiny|small] [--setting gspo_beta0] [--iterations 2]

Prints the top functions by cumulative and by own time (after one untimed warm-up iteration).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--setting", default="gspo_beta0")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    import bench_task
    from bench_ours import build_trainer

    setting = common.SETTINGS[args.setting]
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(str(common.ensure_model(args.model)), setting, output_dir, bench_task)
        trainer.iteration(0)
        profiler = cProfile.Profile()
        profiler.enable()
        for index in range(1, 1 + args.iterations):
            trainer.iteration(index)
        profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
