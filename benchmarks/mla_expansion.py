"""Sampling with and without the incremental MLA expansion (`rollout/mla_cache.py`), side by side in one run.

    python benchmarks/mla_expansion.py [--scenarios 8] [--repeats 2] [--out FILE.json] [--quick]

Plays the demo's held-out episodes (the first `--scenarios` eval scenarios x 4 samples, the warm-started
tiny Kimi-K2.5 with the demo's fresh LoRA) alternately with transformers' own MLA (the whole cached latent
expanded again at every decode step) and with ours (each position expanded once), and reports the wall
time of each and the held-out numbers, which must be equal (exit status 1 if not). Writes `--out` (default
benchmarks/results/mla_expansion_<commit>.json). `--quick`: the base tiny model, 1 scenario, 1 repeat, 2 turns of
8 tokens (a smoke test, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def full_reexpansion():
    """transformers' own behaviour: `HFGenerator.generate` enters a context that patches nothing."""
    from stateset_agents.rollout import hf_generation

    original = hf_generation.incremental_mla_expansion
    hf_generation.incremental_mla_expansion = lambda model: contextlib.nullcontext(0)
    try:
        yield
    finally:
        hf_generation.incremental_mla_expansion = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    from stateset_agents import demo
    from stateset_agents.embedded import ensure_embedded_model
    from stateset_agents.training.trainer import GSPOTrainer

    config = demo.demo_config(tempfile.mkdtemp(prefix="bench_mla_expansion_"), 1, 0)  # a trainer needs a run dir
    if args.quick:
        config = config.replace(model_name="tiny-kimi-k2.5-base", max_new_tokens=8, max_turns=2)
        args.scenarios, args.repeats = 1, 1
    ensure_embedded_model(config.model_name)
    trainer = GSPOTrainer(config)
    seconds: dict[str, list[float]] = {"full re-expansion": [], "incremental": []}
    results: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in seconds:
            with full_reexpansion() if mode == "full re-expansion" else contextlib.nullcontext():
                started = time.perf_counter()
                results[mode] = demo.held_out(trainer, scenarios=args.scenarios)
                seconds[mode].append(time.perf_counter() - started)
            print(f"{mode}: {seconds[mode][-1]:.1f} s, reward {results[mode]['reward_mean']:.6f}", flush=True)
    same = results["full re-expansion"] == results["incremental"]
    speedup = statistics.median(seconds["full re-expansion"]) / statistics.median(seconds["incremental"])
    report = {"episodes": results["incremental"]["episodes"], "seconds": seconds, "speedup_median": speedup,
              "same_held_out_numbers": same, "held_out": results["incremental"], "commit": common.git_commit()}
    out = args.out or RESULTS / f"mla_expansion_{common.git_commit()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"speed-up {speedup:.2f}x, held-out numbers equal: {same}\n{out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
