"""`make bench`: our GSPO trainer vs TRL's GRPOTrainer (GSPO mode), side by side, plus rollout throughput.

    python benchmarks/run_benchmarks.py [--models tiny,small] [--settings gspo_beta0,gspo_beta0.04]
                                        [--repeats 3] [--quick] [--skip-trl] [--skip-rollout]
                                        [--out-dir benchmarks/results/vs_trl_MODELS_COMMIT]

Every timed run is its own subprocess (peak RSS is per framework), and runs are strictly
sequential: never two timed processes at once (on a shared machine, also hold
`flock /tmp/stateset-cpu.lock` around the whole command). The order of the two frameworks
alternates between repeats so slow drift of the machine does not favour either.

Writes `<out-dir>/results.json` (every run, every iteration) and `<out-dir>/results.md` (the
tables, ratios ours / TRL); the default out-dir is named by what it measured:
`benchmarks/results/vs_trl[_quick]_<models>_<commit>`. See benchmarks/RESULTS.md for the reading.
`--quick` is a smoke test (under a minute): the tiny model, one setting at a few tokens, 1 repeat,
a short rollout run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

SCRIPTS = {"ours": HERE / "bench_ours.py", "trl": HERE / "bench_trl.py"}


def bench_env(threads: int) -> dict:
    """Environment of every timed subprocess: offline, and the same torch thread count for both."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_one(framework: str, model_dir: Path, setting: common.Setting, out: Path, log, threads: int) -> dict:
    command = [sys.executable, str(SCRIPTS[framework]), "--model-dir", str(model_dir),
               "--setting", common.setting_to_json(setting), "--out", str(out)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=bench_env(threads))
    if result.returncode != 0:
        raise RuntimeError(f"{framework} run failed ({result.returncode}):\n{result.stderr[-4000:]}")
    record = json.loads(out.read_text())
    log(f"    {framework:4s} done in {time.perf_counter() - started:5.1f}s: "
        f"median iteration {summarize_run(record, setting)['iteration']:.3f}s")
    return record


def summarize_run(record: dict, setting: common.Setting) -> dict:
    """Per-run numbers: medians over the warm window, tokens/s, reward at the first and last iteration."""
    window = record["iterations"][setting.warmup_iterations:]
    med = lambda key: statistics.median(it[key] for it in window)  # noqa: E731
    generation = sum(it["generation"] for it in window)
    return {
        "iteration": med("iteration"), "generation": med("generation"), "scoring": med("scoring"),
        "update": med("update"),
        "tokens_per_second": sum(it["completion_tokens"] for it in window) / max(generation, 1e-9),
        "completion_tokens": statistics.mean(it["completion_tokens"] for it in window),
        "optimizer_steps": sum(it["optimizer_steps"] for it in record["iterations"]),
        "peak_rss_mb": record["peak_rss_mb"], "rss_after_load_mb": record["rss_after_load_mb"],
        "reward_first": record["iterations"][0]["reward_mean"], "reward_last": record["iterations"][-1]["reward_mean"],
        "clip_fraction": statistics.mean(it.get("clip_fraction", float("nan")) for it in window),
        "trainable_parameters": record["trainable_parameters"],
    }


def aggregate(runs: list[dict]) -> dict:
    """Median over repeats, with min and max (the spread)."""
    out = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def fmt(stat: dict, digits: int = 3, spread: bool = True) -> str:
    text = f"{stat['median']:.{digits}f}"
    if spread and len({stat['min'], stat['max']}) > 1:
        text += f" ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"
    return text


def markdown(results: dict) -> str:
    lines = ["# Benchmark results", ""]
    meta = results["machine"]
    lines += [f"Machine: {meta['cpu']}, {meta['cores']} cores, torch threads {results['threads']}; " +
              ", ".join(f"{k} {v}" for k, v in results["versions"].items()), ""]
    for name, info in results["models"].items():
        lines.append(f"- model `{name}`: {info['parameters']:,} parameters ({info['description']})")
    setting_lines = {s["name"]: s for s in results["settings"]}
    any_setting = next(iter(setting_lines.values()))
    lines += ["", f"Matched settings: {any_setting['prompts_per_iteration']} prompts x group "
              f"{any_setting['group_size']} = {any_setting['prompts_per_iteration'] * any_setting['group_size']} "
              f"completions of up to {any_setting['max_new_tokens']} tokens per iteration, "
              f"{any_setting['steps_per_rollout']} optimizer steps per rollout batch, LoRA r={any_setting['lora_r']}, "
              f"lr {any_setting['learning_rate']}, clip [1-{any_setting['clip_low']}, 1+{any_setting['clip_high']}], "
              f"{any_setting['warmup_iterations']} warm-up + {any_setting['timed_iterations']} timed iterations, "
              f"{results['repeats']} repeats (median, min–max).", ""]
    lines += ["## Per framework", "",
              "| model | setting | framework | iteration s | generation s | scoring s | update s | tokens / iter "
              "| gen tokens/s | peak RSS MB | reward first → last | clip frac |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["table"]:
        a = row["aggregate"]
        lines.append(
            f"| {row['model']} | {row['setting']} | {row['framework']} | {fmt(a['iteration'])} | "
            f"{fmt(a['generation'])} | {fmt(a['scoring'], 4)} | {fmt(a['update'])} | "
            f"{a['completion_tokens']['median']:.0f} | {fmt(a['tokens_per_second'], 0)} | {fmt(a['peak_rss_mb'], 0)} | "
            f"{a['reward_first']['median']:.3f} → {a['reward_last']['median']:.3f} | "
            f"{a['clip_fraction']['median']:.2f} |")
    if results["ratios"]:
        lines += ["", "## Ratios ours / TRL (medians; < 1 means ours is faster / lighter)", "",
                  "| model | setting | iteration | generation | update | gen tokens/s | peak RSS |",
                  "|---|---|---|---|---|---|---|"]
        for row in results["ratios"]:
            lines.append(f"| {row['model']} | {row['setting']} | {row['iteration']:.2f}x | {row['generation']:.2f}x | "
                         f"{row['update']:.2f}x | {row['tokens_per_second']:.2f}x | {row['peak_rss_mb']:.2f}x |")
    if results.get("rollout"):
        rollout = results["rollout"]
        lines += ["", f"## Multi-turn rollouts (customer_service, {rollout['model']}, {rollout['episodes']} episodes, "
                  f"up to {rollout['max_turns']} turns x {rollout['max_new_tokens']} tokens)", "",
                  "| mode | episodes/s | tokens/s | generate calls | speed-up vs loop |", "|---|---|---|---|---|"]
        loop = rollout["modes"]["loop"]["episodes_per_second"]["median"]
        for mode, stats in rollout["modes"].items():
            lines.append(f"| {mode} | {fmt(stats['episodes_per_second'], 2)} | {fmt(stats['tokens_per_second'], 0)} | "
                         f"{stats['generate_calls']['median']:.0f} | "
                         f"{stats['episodes_per_second']['median'] / loop:.1f}x |")
    return "\n".join(lines) + "\n"


def run_rollout(args, out_dir: Path, log) -> dict:
    records = []
    for repeat in range(args.repeats):
        out = out_dir / "runs" / f"rollout_{repeat}.json"
        command = [sys.executable, str(HERE / "bench_rollout.py"), "--out", str(out)]
        command += ["--quick"] if args.quick else []
        log(f"  rollout repeat {repeat + 1}/{args.repeats}")
        result = subprocess.run(command, capture_output=True, text=True, env=bench_env(args.threads))
        if result.returncode != 0:
            raise RuntimeError(f"rollout benchmark failed:\n{result.stderr[-4000:]}")
        records.append(json.loads(out.read_text()))
    modes: dict[str, list[dict]] = {}
    for record in records:
        for run in record["runs"]:
            modes.setdefault(run["mode"], []).append(
                {k: run[k] for k in ("episodes_per_second", "tokens_per_second", "generate_calls", "seconds")})
    first = records[0]
    return {"model": first["model"], "episodes": first["episodes"], "max_turns": first["max_turns"],
            "max_new_tokens": first["max_new_tokens"], "modes": {m: aggregate(v) for m, v in modes.items()},
            "records": records}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--settings", default=",".join(common.SETTINGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=(
        "smoke test: model tiny, setting gspo_beta0 at smoke size (2 prompts x 2, 8 tokens), 1 repeat, short rollouts"))
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-rollout", action="store_true")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results/vs_trl[_quick]_<models>_<commit>")
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only re-render results.md from a results.json")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch threads in every run (OMP_NUM_THREADS). 1 by default: on a shared 2-core machine two OpenMP "
        "threads spin-wait on each other and small matmuls get up to 40x slower"))
    args = parser.parse_args(argv)
    if args.render:
        text = markdown(json.loads(Path(args.render).read_text()))
        Path(args.render).with_suffix(".md").write_text(text)
        print(text)
        return 0
    if args.quick:
        args.repeats, args.models, args.settings = 1, "tiny", "gspo_beta0"
    if args.out_dir is None:
        args.out_dir = str(HERE / "results" / common.result_stem("vs_trl", args.models.replace(",", "-"), args.quick))
    log = lambda message: print(message, flush=True)  # noqa: E731
    out_dir = Path(args.out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    frameworks = ["ours"] if args.skip_trl else ["ours", "trl"]
    if not args.skip_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            sys.exit("TRL is not installed: pip install -e '.[bench]' (or pass --skip-trl)")

    models = {}
    for name in args.models.split(","):
        directory = common.ensure_model(name)
        models[name] = {"path": str(directory), "parameters": common.parameter_count(directory),
                        "description": common.MODELS[name].description}
        log(f"model {name}: {models[name]['parameters']:,} parameters at {directory}")
    settings = [common.SETTINGS[name] for name in args.settings.split(",")]
    if args.quick:
        settings = [common.smoke(s) for s in settings]

    table, ratios = [], []
    for model_name, model in models.items():
        for setting in settings:
            log(f"{model_name} / {setting.name}")
            per_framework: dict[str, list[dict]] = {f: [] for f in frameworks}
            raw: dict[str, list[dict]] = {f: [] for f in frameworks}
            for repeat in range(args.repeats):
                order = frameworks if repeat % 2 == 0 else frameworks[::-1]
                for framework in order:
                    out = out_dir / "runs" / f"{model_name}_{setting.name}_{framework}_{repeat}.json"
                    record = run_one(framework, Path(model["path"]), setting, out, log, args.threads)
                    raw[framework].append(record)
                    per_framework[framework].append(summarize_run(record, setting))
            for framework in frameworks:
                table.append({"model": model_name, "setting": setting.name, "framework": framework,
                              "aggregate": aggregate(per_framework[framework]), "runs": per_framework[framework]})
            if "trl" in per_framework:
                ours, theirs = aggregate(per_framework["ours"]), aggregate(per_framework["trl"])
                ratios.append({"model": model_name, "setting": setting.name, **{
                    key: ours[key]["median"] / theirs[key]["median"]
                    for key in ("iteration", "generation", "update", "tokens_per_second", "peak_rss_mb")}})

    results = {
        "machine": {"cpu": common.cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": common.versions(), "models": models, "repeats": args.repeats, "threads": args.threads,
        "settings": [json.loads(common.setting_to_json(s)) for s in settings],
        "table": table, "ratios": ratios, "command": " ".join(sys.argv),
    }
    if not args.skip_rollout:
        log("rollout throughput")
        results["rollout"] = run_rollout(args, out_dir, log)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (out_dir / "results.md").write_text(text)
    print(text)
    return 0



if __name__ == "__main__":
    sys.exit(main())
