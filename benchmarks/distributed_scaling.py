"""Data-parallel scaling: iteration time of the same training run on 1 and on 2 processes, and how
much of it is communication.

    python benchmarks/distributed_scaling.py [--model small] [--setting gspo_beta0] [--runs 1x1,2x1]
                                             [--repeats 2] [--out-dir DIR] [--quick]

Each run is our GSPOTrainer with the benchmark's matched config (`bench_ours.build_trainer`: the
same model, prompts, reward, LoRA, optimizer and global batch as `run_benchmarks.py`), launched as
a user launches it: one process is `python ...`; N > 1 processes are
`accelerate launch --config_file configs/accelerate/multi_process_cpu.yaml --num_processes N ...`
(DDP, gloo, every rank on the CPU). A run `PxT` is P processes with T torch threads each
(OMP_NUM_THREADS): `1x1` vs `2x1` is the data-parallel comparison on the same per-process
compute, `1x2` is what the same two cores give one process. Runs are strictly sequential and their
order alternates between repeats.

The global batch is the same on every run: the trainer gives rank r the groups g with g mod N = r
for rollouts, and the episodes at positions r, r+N, ... of each minibatch for the update.

Communication is measured inside the worker processes, in this script only (the package is not
changed), on every collective the trainer issues in an iteration:
- the gradient all-reduce: a DDP communication hook (`register_comm_hook` on `trainer.train_model`,
  the DDP module) that runs the bucket's all-reduce synchronously and times it (LoRA gradients fit
  one bucket, which is ready only at the end of the backward, so DDP had no overlap to lose);
- the object gathers (`trainer.parallel.gather`: the rollout failure flags, the trajectories and
  reward results, the per-rank step statistics) and the non-finite agreement (`parallel.any`);
- DDP's buffer broadcast before every training forward (`_sync_buffers`).
Before each collective the wrapper runs a one-element all-reduce, and reports its time apart as
*wait*: the time this rank idles until the other rank arrives (load imbalance, e.g. one rank's
completions are longer), so that *transfer* is the collective itself. Communication share =
transfer / iteration time. After the timed iterations, each worker also times an all-reduce of a
buffer of the trainable-parameter size and a one-element all-reduce (the latency added by each wait
probe) on the idle machine, and records the pickled size of one gathered trajectory batch.

Writes `<out-dir>/results.json` (every run, every iteration, every rank) and `<out-dir>/results.md`.
Default out-dir: `benchmarks/results/distributed_scaling[_quick]_<model>_<commit>`.
`--quick`: the bench model `tiny`, the smoke-size setting, 1 iteration, runs 1x1 and 2x1, 1 repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

ACCELERATE_CONFIG = REPO / "configs" / "accelerate" / "multi_process_cpu.yaml"


# --- worker: one training run (one rank of it) ------------------------------------------------------


class CommTimer:
    """Times every collective of the trainer's iteration on this rank: wait (until the other ranks
    arrive) and transfer (the collective itself), per kind."""

    def __init__(self, trainer):
        import torch
        import torch.distributed as dist

        self.dist, self.torch = dist, torch
        self.world = trainer.parallel.world_size
        self.flag = torch.zeros(1)
        self.record_bytes = False
        self.reset()
        parallel = trainer.parallel
        gather, any_ = parallel.gather, parallel.any

        def timed_gather(items):
            wait = self._wait()
            if self.record_bytes:
                self.bytes["gather"] += len(pickle.dumps(list(items)))
            started = time.perf_counter()
            out = gather(items)
            self._add("gather", wait, time.perf_counter() - started)
            return out

        def timed_any(flag):
            wait = self._wait()
            started = time.perf_counter()
            out = any_(flag)
            self._add("any", wait, time.perf_counter() - started)
            return out

        parallel.gather, parallel.any = timed_gather, timed_any  # instance attributes shadow the methods
        ddp = trainer.train_model
        ddp.register_comm_hook(None, self._allreduce_hook)
        sync_buffers = ddp._sync_buffers

        def timed_sync_buffers():
            wait = self._wait()
            started = time.perf_counter()
            sync_buffers()
            self._add("buffer_broadcast", wait, time.perf_counter() - started)

        if ddp.will_sync_module_buffers():
            ddp._sync_buffers = timed_sync_buffers
        self.allreduce_bytes = 0

    def reset(self) -> None:
        self.wait: dict[str, float] = defaultdict(float)
        self.transfer: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)

    def snapshot(self) -> dict:
        return {"wait": dict(self.wait), "transfer": dict(self.transfer), "calls": dict(self.calls),
                "bytes": dict(self.bytes)}

    def _wait(self) -> float:
        started = time.perf_counter()
        self.dist.all_reduce(self.flag)
        return time.perf_counter() - started

    def _add(self, kind: str, wait: float, transfer: float) -> None:
        self.wait[kind] += wait
        self.transfer[kind] += transfer
        self.calls[kind] += 1

    def _allreduce_hook(self, state, bucket):
        """DDP's default hook (all-reduce, then divide by the world size), run synchronously and timed."""
        buffer = bucket.buffer()
        wait = self._wait()
        started = time.perf_counter()
        self.dist.all_reduce(buffer)
        self._add("grad_allreduce", wait, time.perf_counter() - started)
        self.bytes["grad_allreduce"] += buffer.numel() * buffer.element_size()
        self.allreduce_bytes = buffer.numel() * buffer.element_size()
        buffer.div_(self.world)
        future = self.torch.futures.Future()
        future.set_result(buffer)
        return future


def idle_collectives(trainer, repeats: int = 20) -> dict:
    """Collectives alone, after training (both ranks idle, in step): all-reduce of the trainable-parameter
    size, and of one element (the wait probe's own cost)."""
    import torch
    import torch.distributed as dist

    trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    out = {}
    for name, numel in (("allreduce_trainable", trainable), ("allreduce_1_element", 1)):
        buffer = torch.zeros(numel)
        dist.barrier()
        times = []
        for _ in range(repeats):
            dist.all_reduce(torch.zeros(1))
            started = time.perf_counter()
            dist.all_reduce(buffer)
            times.append(time.perf_counter() - started)
        out[name] = {"median_s": statistics.median(times), "numel": numel, "bytes": numel * 4}
    return out


def worker(args) -> int:
    import bench_task
    from bench_ours import build_trainer

    setting = common.setting_from_json(args.setting)
    started = time.perf_counter()
    trainer = build_trainer(args.model_dir, setting, args.output_dir, bench_task)
    setup_seconds = time.perf_counter() - started
    timer = CommTimer(trainer) if trainer.parallel.enabled else None
    iterations = []
    for index in range(setting.iterations):
        if timer:
            timer.reset()
            timer.record_bytes = index == 0  # pickling costs time: sizes only from the first (warm-up) iteration
        cpu_started = time.process_time()
        metrics = trainer.iteration(index)
        iterations.append({
            "cpu_seconds": time.process_time() - cpu_started, "iteration": metrics["time/iteration"], "rollout": metrics["time/rollout"],
            "reward": metrics["time/reward"], "update": metrics["time/update"],
            "completion_tokens": metrics["tokens/completion"], "reward_mean": metrics["reward/mean"],
            "optimizer_steps": metrics["optimizer_steps"], "grad_norm": metrics.get("grad_norm"),
            **({"comm": timer.snapshot()} if timer else {}),
        })
    record = {
        "rank": trainer.parallel.rank, "world_size": trainer.parallel.world_size,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0), "torch_threads": _torch_threads(),
        "setup_seconds": setup_seconds, "iterations": iterations, "peak_rss_mb": common.peak_rss_mb(),
        "trainable_parameters": sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad),
    }
    if timer:
        record["describe"] = trainer.parallel.describe()
        record["grad_bucket_bytes"] = timer.allreduce_bytes
        record["idle_collectives"] = idle_collectives(trainer)
        records = [r for _, r in sorted(trainer.parallel.gather([(trainer.parallel.rank, record)]))]
    else:
        records = [record]
    if trainer.parallel.is_main:
        Path(args.out).write_text(json.dumps({"ranks": records}, indent=1))
    trainer.parallel.barrier()
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --- orchestrator ------------------------------------------------------------------------------------


def launch_command(processes: int, worker_args: list[str]) -> list[str]:
    """How a user starts the run: plain python for one process, `accelerate launch` with the shipped CPU config for more."""
    script = [str(Path(__file__).resolve()), "--worker", *worker_args]
    if processes == 1:
        return [sys.executable, *script]
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate), "launch", "--config_file", str(ACCELERATE_CONFIG), "--num_processes", str(processes),
            *script]


def display_command(processes: int, threads: int) -> str:
    prefix = f"OMP_NUM_THREADS={threads} "
    if processes == 1:
        return prefix + "python benchmarks/distributed_scaling.py --worker ..."
    return (prefix + f"accelerate launch --config_file configs/accelerate/multi_process_cpu.yaml --num_processes "
            f"{processes} benchmarks/distributed_scaling.py --worker ...")


def run_one(processes: int, threads: int, model_dir: Path, setting: common.Setting, out: Path, log) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("WORLD_SIZE", None)
    with tempfile.TemporaryDirectory() as output_dir:
        worker_args = ["--model-dir", str(model_dir), "--setting", common.setting_to_json(setting),
                       "--output-dir", str(Path(output_dir) / "run"), "--out", str(out)]
        started, load_before = time.perf_counter(), os.getloadavg()
        result = subprocess.run(launch_command(processes, worker_args), cwd=REPO, capture_output=True, text=True,
                                env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{processes}x{threads} run failed ({result.returncode}):\n{result.stdout[-2000:]}\n"
                           f"{result.stderr[-4000:]}")
    record = json.loads(out.read_text())
    record.update(processes=processes, threads=threads, wall_seconds=time.perf_counter() - started,
                  loadavg_before=load_before, loadavg_after=os.getloadavg(),
                  command=display_command(processes, threads))
    summary = summarize(record, setting)
    log(f"    {processes}x{threads} done in {record['wall_seconds']:5.1f}s: median iteration "
        f"{summary['iteration']:.3f}s, communication {summary['comm_transfer']:.3f}s, CPU s/s per process "
        f"{summary['cpu_per_rank']:.2f}, load average {load_before[0]:.2f} -> {record['loadavg_after'][0]:.2f}")
    return record


COMM_KINDS = ("grad_allreduce", "gather", "any", "buffer_broadcast")


def summarize(record: dict, setting: common.Setting) -> dict:
    """Medians over the warm window. Times are rank 0's (ranks step together); wait is the larger rank's."""
    ranks = record["ranks"]
    window = slice(setting.warmup_iterations, None)
    med = lambda values: statistics.median(values) if values else 0.0  # noqa: E731
    main = ranks[0]["iterations"][window]
    out = {key: med([it[key] for it in main]) for key in ("iteration", "rollout", "reward", "update")}
    out["rollout_max_rank"] = med([max(r["iterations"][i]["rollout"] for r in ranks)
                                   for i in range(setting.warmup_iterations, setting.iterations)])
    out["other"] = med([it["iteration"] - it["rollout"] - it["reward"] - it["update"] for it in main])
    out["completion_tokens"] = med([it["completion_tokens"] for it in main])
    out["reward_mean"] = med([it["reward_mean"] for it in main])
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ranks)
    # CPU seconds this process used per second of iteration: below 1 means it was not running all the time
    # (waiting in a collective, or its core taken by another process on the machine)
    out["cpu_per_rank"] = med([statistics.mean(r["iterations"][i]["cpu_seconds"] / r["iterations"][i]["iteration"]
                                               for r in ranks)
                               for i in range(setting.warmup_iterations, setting.iterations)])
    out["cpu_seconds_all"] = med([sum(r["iterations"][i]["cpu_seconds"] for r in ranks)
                                  for i in range(setting.warmup_iterations, setting.iterations)])
    for kind in COMM_KINDS:
        out[f"transfer/{kind}"] = med([it.get("comm", {}).get("transfer", {}).get(kind, 0.0) for it in main])
        out[f"wait/{kind}"] = med([max(r["iterations"][i].get("comm", {}).get("wait", {}).get(kind, 0.0)
                                       for r in ranks) for i in range(setting.warmup_iterations, setting.iterations)])
    out["comm_transfer"] = med([sum(it.get("comm", {}).get("transfer", {}).values()) for it in main])
    out["comm_wait"] = med([max(sum(r["iterations"][i].get("comm", {}).get("wait", {}).values()) for r in ranks)
                            for i in range(setting.warmup_iterations, setting.iterations)])
    out["comm_share"] = out["comm_transfer"] / out["iteration"]
    out["wait_share"] = out["comm_wait"] / out["iteration"]
    return out


def aggregate(runs: list[dict]) -> dict:
    return {key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs),
                  "max": max(r[key] for r in runs)} for key in runs[0]}


def fmt(stat: dict, digits: int = 3) -> str:
    text = f"{stat['median']:.{digits}f}"
    if stat["min"] != stat["max"]:
        text += f" ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"
    return text


def markdown(results: dict) -> str:
    setting, model = results["setting"], results["model"]
    lines = ["# Data-parallel scaling (CPU, DDP over gloo)", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), "",
             f"Model `{model['name']}`: {model['parameters']:,} parameters ({model['description']}); "
             f"{results['trainable_parameters']:,} trainable (LoRA r={setting['lora_r']}). Setting `{setting['name']}`: "
             f"{setting['prompts_per_iteration']} prompts x group {setting['group_size']} = "
             f"{setting['prompts_per_iteration'] * setting['group_size']} completions of up to "
             f"{setting['max_new_tokens']} tokens per iteration, {setting['steps_per_rollout']} optimizer steps; the same "
             f"global batch on every run. {setting['warmup_iterations']} warm-up + {setting['timed_iterations']} timed "
             f"iterations, {results['repeats']} repeat(s): median over repeats (min–max).", "",
             "| run (processes x threads) | iteration s | speed-up vs 1x1 | rollout s | reward s | update s "
             "| between reward and update s | communication s | communication share | waiting for the other rank s "
             "| CPU s per s, per process | CPU s per iteration, all processes | peak RSS MB / process |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = ["", "rollout, reward, update: the trainer's own timers (rank 0); update includes the gradient all-reduce, "
             "the non-finite agreement and the gather of step statistics; *between reward and update*: the gather of "
             "the trajectories and rewards, including the wait for the slower rank's rollouts. Communication: the "
             "collectives' own time (transfer) summed over the iteration; waiting: the time a rank idled before "
             "them until the other arrived (its rollouts or backward took longer), measured apart. CPU s per s: the "
             "process's CPU time over the iteration's wall time (mean over ranks; below 1: idle in a collective or "
             "its core taken by another process); CPU s per iteration, all processes: the work the run needed, whoever "
             "else used the machine. Load average before / after each run is in results.json."]
    base = results["runs"].get("1x1")
    for name, run in results["runs"].items():
        a = run["aggregate"]
        speedup = f"{base['aggregate']['iteration']['median'] / a['iteration']['median']:.2f}x" if base else "–"
        comm = "–" if run["processes"] == 1 else fmt(a["comm_transfer"])
        share = "–" if run["processes"] == 1 else f"{a['comm_share']['median']:.1%}"
        wait = "–" if run["processes"] == 1 else fmt(a["comm_wait"])
        lines.append(f"| {name} | {fmt(a['iteration'])} | {speedup} | {fmt(a['rollout'])} | {fmt(a['reward'], 4)} | "
                     f"{fmt(a['update'])} | {fmt(a['other'])} | {comm} | {share} | {wait} | {fmt(a['cpu_per_rank'], 2)} | {fmt(a['cpu_seconds_all'], 2)} | "
                     f"{a['peak_rss_mb']['median']:.0f} |")
    lines += notes
    multi = [(n, r) for n, r in results["runs"].items() if r["processes"] > 1]
    for name, run in multi:
        a = run["aggregate"]
        lines += ["", f"Communication of run {name}, per iteration (rank 0's transfer; wait = the rank that waited more):",
                  "", "| collective | calls / iteration | transfer s | wait s | bytes rank 0 sends (first iteration) |",
                  "|---|---|---|---|---|"]
        first = run["records"][0]["ranks"][0]["iterations"][-1].get("comm", {})
        sizes = run["records"][0]["ranks"][0]["iterations"][0].get("comm", {}).get("bytes", {})
        for kind in COMM_KINDS:
            lines.append(f"| {kind} | {first.get('calls', {}).get(kind, 0)} | {fmt(a[f'transfer/{kind}'], 4)} | "
                         f"{fmt(a[f'wait/{kind}'], 4)} | {sizes.get(kind, 0):,} |")
        idle = run["records"][0]["ranks"][0].get("idle_collectives", {})
        if idle:
            lines += ["", "Idle collectives (after training, ranks in step): " + "; ".join(
                f"{k} ({v['bytes']:,} bytes) {v['median_s'] * 1e3:.2f} ms" for k, v in idle.items())]
        lines += ["", f"Launched as: `{run['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="bench model (common.MODELS): small is the ~20M one")
    parser.add_argument("--setting", default="gspo_beta0")
    parser.add_argument("--runs", default="1x1,2x1", help=(
        "PROCESSESxTHREADS, comma-separated; e.g. 1x2 adds one process with 2 torch threads"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out-dir", default=None,
                        help="default: benchmarks/results/distributed_scaling[_quick]_<model>_<commit>")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: model tiny, smoke-size setting, 1 iteration, runs 1x1,2x1, 1 repeat")
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only re-render results.md from a results.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.worker:
        return worker(args)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        setting = common.Setting(**results["setting"])
        for run in results["runs"].values():  # summaries recomputed from the raw records
            run["summaries"] = [summarize(r, setting) for r in run["records"]]
            run["aggregate"] = aggregate(run["summaries"])
        text = markdown(results)
        Path(args.render).with_suffix(".md").write_text(text)
        print(text)
        return 0
    setting = common.SETTINGS[args.setting]
    if args.quick:
        args.model, args.runs, args.repeats = "tiny", "1x1,2x1", 1
        setting = replace(common.smoke(setting), warmup_iterations=0, timed_iterations=1)
    if args.out_dir is None:
        args.out_dir = str(HERE / "results" / common.result_stem("distributed_scaling", args.model, args.quick))
    out_dir = Path(args.out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, flush=True)  # noqa: E731
    model_dir = common.ensure_model(args.model)  # built here once, not by two ranks at a time
    model = {"name": args.model, "path": str(model_dir), "parameters": common.parameter_count(model_dir),
             "description": common.MODELS[args.model].description}
    log(f"model {args.model}: {model['parameters']:,} parameters; setting {setting.name}")
    runs = [tuple(int(x) for x in spec.split("x")) for spec in args.runs.split(",")]
    records: dict[str, list[dict]] = {f"{p}x{t}": [] for p, t in runs}
    for repeat in range(args.repeats):
        order = runs if repeat % 2 == 0 else runs[::-1]
        log(f"repeat {repeat + 1}/{args.repeats}")
        for processes, threads in order:
            out = out_dir / "runs" / f"{processes}x{threads}_{repeat}.json"
            records[f"{processes}x{threads}"].append(run_one(processes, threads, model_dir, setting, out, log))
    results = {
        "machine": {"cpu": common.cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": common.versions(), "model": model, "setting": json.loads(common.setting_to_json(setting)),
        "repeats": args.repeats, "command": "python benchmarks/distributed_scaling.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "trainable_parameters": next(iter(records.values()))[0]["ranks"][0]["trainable_parameters"],
        "runs": {},
    }
    for name, recs in records.items():
        summaries = [summarize(r, setting) for r in recs]
        results["runs"][name] = {"processes": recs[0]["processes"], "threads": recs[0]["threads"],
                                 "command": recs[0]["command"], "aggregate": aggregate(summaries),
                                 "summaries": summaries, "records": recs}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (out_dir / "results.md").write_text(text)
    print(text)
    return 0



if __name__ == "__main__":
    sys.exit(main())
