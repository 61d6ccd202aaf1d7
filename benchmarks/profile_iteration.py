"""Where does one iteration of our trainer spend its time? cProfile of a few iterations.

    python benchmarks/profile_iteration.py [--model tiny|small] [--setting gspo_beta0] [--iterations 2]
                                           [--out profile.txt] [--quick]

Prints the top functions by cumulative and by own time (after one untimed warm-up iteration), and
writes the same text to `--out` when given. `--quick`: the smoke-size setting (`common.smoke`), one
profiled iteration, top 15.
"""

from __future__ import annotations

import argparse
import cProfile
import io
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
    parser.add_argument("--out", type=Path, help="also write the profile text here")
    parser.add_argument("--quick", action="store_true", help="smoke-size setting, 1 profiled iteration, top 15")
    args = parser.parse_args(argv)
    import bench_task
    from bench_ours import build_trainer

    setting = common.SETTINGS[args.setting]
    if args.quick:
        setting, args.iterations, args.top = common.smoke(setting), 1, 15
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(str(common.ensure_model(args.model)), setting, output_dir, bench_task)
        trainer.iteration(0)
        profiler = cProfile.Profile()
        profiler.enable()
        for index in range(1, 1 + args.iterations):
            trainer.iteration(index)
        profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(text.getvalue())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
