"""Tiny-model build time and batched generation throughput (issue 2's report).

    python benchmarks/generation_throughput.py [--model tiny-kimi-k2.5-base] [--tokens 48] [--repeats 3]
                                               [--out FILE.json] [--quick]

Builds the base tiny Kimi-K2.5 from scratch into a temporary cache (timed), then samples 8
conversations' next turns either in one batched `generate` call or one conversation at a time,
with a fixed number of new tokens (no early stop), and reports completion tokens per second.
Writes `--out` (default benchmarks/results/generation_throughput[_quick]_<model>_<commit>.json).
`--quick`: no build timing, 4 tokens, 1 repeat (a smoke test, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def build_seconds() -> float:
    from stateset_agents.embedded import ensure_embedded_model

    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("STATESET_AGENTS_CACHE")
        os.environ["STATESET_AGENTS_CACHE"] = cache
        started = time.perf_counter()
        ensure_embedded_model("tiny-kimi-k2.5-base", log=lambda _: None)
        seconds = time.perf_counter() - started
        if previous is None:
            os.environ.pop("STATESET_AGENTS_CACHE")
        else:
            os.environ["STATESET_AGENTS_CACHE"] = previous
    return seconds


def conversations() -> list[list[dict]]:
    from stateset_agents.tasks.registry import get_task

    task = get_task("customer_service")
    return [task.make_env(scenario).reset() for scenario in task.eval_scenarios()[:8]]


def tokens_per_second(agent, convs, tools, tokens: int, batched: bool) -> float:
    import torch

    generator = agent.generator
    stops = generator.stop_token_ids
    generator.stop_token_ids = [-1]  # fixed-length generation: every row produces `tokens` tokens
    try:
        torch.manual_seed(0)
        started = time.perf_counter()
        groups = [convs] if batched else [[c] for c in convs]
        produced = sum(len(t.completion_ids) for group in groups
                       for t in agent.generate(group, tools=tools, max_new_tokens=tokens))
        return produced / (time.perf_counter() - started)
    finally:
        generator.stop_token_ids = stops


def main() -> None:
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.tasks.registry import get_task

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5-base")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="no build timing, 4 tokens, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats = 4, 1
    out = args.out or RESULTS / f"{common.result_stem('generation_throughput', args.model, args.quick)}.json"
    build = None if args.quick else build_seconds()
    agent = Agent(AgentConfig(model_name=args.model, model_kwargs={"device": "cpu"})).load()
    convs, tools = conversations(), get_task("customer_service").tools.schemas()
    tokens_per_second(agent, convs[:2], tools, 4, batched=True)  # warm-up
    batched = [tokens_per_second(agent, convs, tools, args.tokens, True) for _ in range(args.repeats)]
    single = [tokens_per_second(agent, convs, tools, args.tokens, False) for _ in range(args.repeats)]
    result = {
        "model": args.model, "build_seconds": build, "new_tokens_per_conversation": args.tokens,
        "batch8_tokens_per_second": batched, "one_at_a_time_tokens_per_second": single,
        "speedup_median": statistics.median(batched) / statistics.median(single),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
