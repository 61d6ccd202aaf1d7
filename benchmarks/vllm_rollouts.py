"""vLLM vs transformers rollouts, measured side by side in one run (issue 12, item 7).

    python benchmarks/vllm_rollouts.py [--models tiny,small] [--concurrency 1,8,32] [--prompts 32]
                                       [--max-new-tokens 64] [--repeats 2] [--iterations 3]
                                       [--threads 1] [--out-dir DIR] [--quick]

Three measurements (on a shared machine hold `flock /tmp/stateset-cpu.lock` around the command):

1. **Rollout throughput.** For each model, `HFGenerator` (transformers `generate` in this process)
   and `VLLMGenerator` (a managed `VLLMServer` serving `export_for_vllm` of the same model) sample
   the same `--prompts` prompts: first turns of customer_service train scenarios (system prompt,
   opening user message, the task's tool declarations), encoded by the agent, each with its own
   seed, `--max-new-tokens` tokens at most (temperature 1, top_p 1; the end-of-turn token stops a
   completion, as in training). At concurrency c the prompts go out as calls of c prompts, as the
   rollout runner sends them (`run_episodes(concurrency=c)`): for HF one batched `generate` of c
   rows, for vLLM one `generate` with c requests in flight. Reported: completion tokens / s (all
   tokens over all calls' wall time) and seconds per call. Before each timed pass: one warm-up call
   of c prompts (other seeds), and vLLM's prefix cache is reset (`/reset_prefix_cache`), so no pass
   reuses another's prompts; within a pass vLLM reuses the shared prefix (system prompt and tools)
   across requests, as it does in training. The two engines alternate which goes first between
   repeats; the table gives the median over repeats (min–max). The vLLM server is idle, not
   stopped, while transformers runs.
2. **Training iteration time**, `use_vllm` on and off: our GSPOTrainer on the tiny model with the
   matched benchmark config of `bench_ours.build_trainer` (the bench's single-turn prompts and
   parity reward, LoRA, 4 prompts x 8 = 32 completions of up to 48 tokens, 4 optimizer steps) and
   nothing else changed. Split from the trainer's own metrics: `time/rollout`, `time/reward`,
   `time/update` (with vLLM it includes the trainer's recomputation of π_old), `time/weight_sync`
   (vLLM only). The first iteration is a warm-up; medians over the rest. Setup (model load, and with
   vLLM the export and server start) is reported apart.
3. **Weight sync** (`time/weight_sync`: merged export + in-place reload, every iteration of the
   vLLM run), split here into the export (`export_for_vllm`, LoRA merged) and the reload
   (`VLLMServer.reload_weights`: pause, reload, CPU MoE repack, resume) by timing the engine's two
   calls from this script (the package is not changed); and for each throughput model, 3 export +
   reload rounds of the plain model.

Models: the bench models of `common.MODELS` (`tiny`: `TinyKimiSpec()` sizes; `small`: ~20M
parameters), built by `common.build_causal_lm`, with the two MLA widths vLLM's CPU attention runs
set explicitly (`kv_lora_rank=512`, `qk_rope_head_dim=64`, whatever `TinyKimiSpec`'s defaults
are), into `$STATESET_AGENTS_CACHE/bench_models/<name>-mla512-64`.

Threads: this process runs torch with `--threads` threads (1 by default, as the other benchmarks:
run_benchmarks.py --threads explains why); the vLLM server keeps its own CPU thread binding
(`VLLM_CPU_OMP_THREADS_BIND`, default auto), recorded from its log (on 2 cores: the model's OpenMP
threads on one core, the other reserved for its API server and engine loop).

Writes `<out-dir>/results.json` (every call, every iteration) and `<out-dir>/results.md` (the
tables, the exact command, the commit, machine notes); default out-dir
`benchmarks/results/vllm_rollouts[_quick]_<models>_<commit>`. `--quick`: tiny model, concurrency 1
and 8, 8 prompts x 16 tokens, 1 repeat, 1 training iteration per arm at smoke size (still two vLLM
server starts: ~2-3 minutes on 2 cores). Without a vLLM environment (`make vllm-env`, or
`STATESET_VLLM_PYTHON`) it prints why and exits 0 without measuring.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

MLA_WIDTHS = dict(kv_lora_rank=512, qk_rope_head_dim=64)  # the only ones vLLM's CPU MLA attention runs
LOCK = Path("/tmp/stateset-cpu.lock")
TEMPERATURE = 1.0


def log(message: str) -> None:
    print(message, flush=True)


# --- provenance -------------------------------------------------------------------------------------


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "nogit"
    changes = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": commit, "uncommitted_changes": bool(changes),
            "changed_paths": [line[3:] for line in changes],
            "describe": commit + (" with uncommitted changes" if changes else "")}


def command_line() -> str:
    """This command as typed from the repository root (the interpreter relative to it when inside)."""
    python = Path(sys.executable)
    try:
        python_text = str(python.relative_to(REPO)) if not python.is_relative_to(Path("/usr")) else str(python)
    except ValueError:
        python_text = str(python)
    script = Path(sys.argv[0]).resolve()
    script_text = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else str(script)
    return shlex.join([python_text, script_text, *sys.argv[1:]])



def lock_is_held() -> bool | None:
    """Whether `/tmp/stateset-cpu.lock` is held (by the `flock` this command should run under)."""
    try:
        with open(LOCK, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return None


def vllm_version(python: Path) -> str:
    result = subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                            text=True, timeout=120)
    return result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else "unknown"


def server_thread_notes(log_path: Path) -> list[str]:
    """The lines of a vLLM server log that say how its CPU worker binds threads."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    keys = ("OMP_THREADS_BIND", "reserve_cpu_num", "core ids", "reserved_cpus")
    return [line.split("]", 1)[-1].strip()[-200:] for line in lines if any(k in line for k in keys)][:8]


# --- models and prompts -----------------------------------------------------------------------------


def ensure_model(name: str) -> Path:
    """Bench model `name` (common.MODELS) at vLLM's CPU MLA widths, built once (fingerprinted)."""
    from stateset_agents.models.tiny_kimi import TinyKimiSpec

    spec = replace(TinyKimiSpec(), **{**common.MODELS[name].spec_overrides, **MLA_WIDTHS})
    fingerprint = "bench-v1|vllm-mla|" + spec.fingerprint()
    target = common.bench_cache() / f"{name}-mla512-64"
    info = target / "bench_fingerprint.txt"
    if not (info.exists() and info.read_text() == fingerprint):
        target.mkdir(parents=True, exist_ok=True)
        common.build_causal_lm(target, spec)
        info.write_text(fingerprint)
    return target


def describe_model(name: str) -> str:
    overrides = {**common.MODELS[name].spec_overrides, **MLA_WIDTHS}
    return (f"{common.MODELS[name].description.split(', MLA')[0]}; MLA kv_lora_rank {overrides['kv_lora_rank']}, "
            f"qk_rope_head_dim {overrides['qk_rope_head_dim']} (vLLM's CPU MLA widths)")


def task_prompts(agent, count: int) -> list:
    """First turns of customer_service train scenarios (system, opening, tool declarations), encoded;
    the text-only ones, in order, cycled when fewer than `count`."""
    from stateset_agents.tasks.registry import get_task

    task = get_task("customer_service")
    tools = task.tools.schemas()
    first_turns = [list(task.make_env(scenario).reset()) for scenario in task.train_scenarios()]
    # text only: the served export is the text stack (scenarios with a photo go to transformers in training)
    text = [messages for messages in first_turns if all(isinstance(m.get("content"), str) for m in messages)]
    return [agent.encode(text[i % len(text)], tools) for i in range(count)]


# --- 1. rollout throughput --------------------------------------------------------------------------


def timed_pass(generate, prompts, seeds, sampling, concurrency: int) -> dict:
    """The prompts as calls of `concurrency` prompts, one after another; every call timed."""
    calls, tokens, finished = [], 0, 0
    for start in range(0, len(prompts), concurrency):
        began = time.perf_counter()
        samples = generate(prompts[start:start + concurrency], sampling, seeds[start:start + concurrency])
        calls.append(time.perf_counter() - began)
        tokens += sum(len(s.completion_ids) for s in samples)
        finished += sum(bool(s.finished) for s in samples)
    seconds = sum(calls)
    return {"seconds": seconds, "calls": len(calls), "call_seconds": calls, "seconds_per_call": seconds / len(calls),
            "completion_tokens": tokens, "finished": finished, "tokens_per_second": tokens / max(seconds, 1e-9)}


def reset_prefix_cache(server) -> None:
    import httpx

    response = httpx.post(f"{server.base_url}/reset_prefix_cache", timeout=60)
    response.raise_for_status()


def throughput(name: str, args, workdir: Path, vllm_python: Path) -> dict:
    import torch

    from stateset_agents.models.export import export_for_vllm
    from stateset_agents.rollout.agent import Agent, AgentConfig
    from stateset_agents.rollout.hf_generation import SamplingSettings
    from stateset_agents.rollout.vllm_client import VLLMGenerator
    from stateset_agents.rollout.vllm_server import VLLMServer, VLLMServerSettings

    model_dir = ensure_model(name)
    agent = Agent(AgentConfig(model_name=str(model_dir), temperature=TEMPERATURE, max_new_tokens=args.max_new_tokens,
                              model_kwargs={"device": "cpu", "dtype": "float32",
                                            "chat_template_kwargs": {"thinking": True}})).load()
    agent.model.eval()
    prompts = task_prompts(agent, args.prompts)
    seeds = [1000 + i for i in range(len(prompts))]
    warm_seeds = [900_000 + i for i in range(len(prompts))]
    sampling = agent.sampling(max_new_tokens=args.max_new_tokens, temperature=TEMPERATURE, top_p=1.0, top_k=0)
    assert isinstance(sampling, SamplingSettings)
    lengths = [len(p.input_ids) for p in prompts]
    max_model_len = 1 << (max(lengths) + args.max_new_tokens - 1).bit_length()
    export_dir = workdir / name / "export"
    began = time.perf_counter()
    export_for_vllm(agent.model, agent.tokenizer, export_dir)
    first_export = time.perf_counter() - began
    server = VLLMServer(export_dir, workdir / name / "server.log",
                        VLLMServerSettings(max_model_len=max(max_model_len, 512)), python=vllm_python)
    log(f"[{name}] starting vLLM on {export_dir} (log {server.log_path})")
    server.start()
    log(f"[{name}] server up in {server.startup_seconds:.1f}s")
    record = {"model": name, "model_dir": str(model_dir), "parameters": common.parameter_count(model_dir),
              "description": describe_model(name), "prompts": len(prompts),
              "prompt_tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
              "max_new_tokens": args.max_new_tokens, "server_startup_seconds": server.startup_seconds,
              "first_export_seconds": first_export, "server_max_model_len": server.settings.max_model_len,
              "runs": []}
    try:
        hf = agent.generator  # HFGenerator on this process's model
        clients = {}
        for concurrency in args.concurrency:
            clients[concurrency] = VLLMGenerator(server.base_url, stop_token_ids=agent.stop_token_ids,
                                                 concurrency=concurrency)
        clients[args.concurrency[0]].check_server(agent.tokenizer)  # the served vocabulary is ours
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                vllm = clients[concurrency]
                vllm.connect()
                order = ["hf", "vllm"] if repeat % 2 == 0 else ["vllm", "hf"]
                for engine in order:
                    generate = hf.generate if engine == "hf" else vllm.generate
                    if engine == "vllm":
                        reset_prefix_cache(server)
                    torch.manual_seed(0)
                    generate(prompts[:concurrency], sampling, warm_seeds[:concurrency])  # warm-up call
                    if engine == "vllm":
                        reset_prefix_cache(server)  # nothing of the timed prompts is cached before the pass
                    result = timed_pass(generate, prompts, seeds, sampling, concurrency)
                    record["runs"].append({"engine": engine, "concurrency": concurrency, "repeat": repeat, **result})
                    log(f"[{name}] repeat {repeat + 1} c={concurrency:<3d} {engine:4s}: "
                        f"{result['tokens_per_second']:7.1f} tok/s, {result['seconds_per_call']:.3f} s/call, "
                        f"{result['completion_tokens']} tokens in {result['seconds']:.2f}s")
        # weight sync of the plain model: export + in-place reload (same config, same weights)
        syncs = []
        for round_ in range(args.sync_rounds):
            target = workdir / name / f"sync-{round_ % 2}"
            began = time.perf_counter()
            export_for_vllm(agent.model, agent.tokenizer, target)
            exported = time.perf_counter() - began
            reloaded = server.reload_weights(target)
            syncs.append({"export": exported, "reload": reloaded, "total": exported + reloaded})
        record["sync_rounds"] = syncs
        log(f"[{name}] export + reload: " + ", ".join(f"{s['export']:.2f}+{s['reload']:.2f}s" for s in syncs))
        record["server_thread_notes"] = server_thread_notes(server.log_path)
    finally:
        server.stop()
    return record


def summarize_throughput(record: dict) -> list[dict]:
    rows = []
    for concurrency in sorted({run["concurrency"] for run in record["runs"]}):
        row = {"model": record["model"], "concurrency": concurrency}
        for engine in ("hf", "vllm"):
            runs = [r for r in record["runs"] if r["engine"] == engine and r["concurrency"] == concurrency]
            row[engine] = {key: spread([r[key] for r in runs]) for key in
                           ("tokens_per_second", "seconds_per_call", "completion_tokens", "finished")}
        row["vllm_over_hf"] = row["vllm"]["tokens_per_second"]["median"] / row["hf"]["tokens_per_second"]["median"]
        rows.append(row)
    return rows


# --- 2 and 3. training iterations -------------------------------------------------------------------


def training_config(model_dir: Path, setting, output_dir: Path, use_vllm: bool):
    """`bench_ours.build_trainer`'s config (the matched benchmark run), with `use_vllm` set."""
    from stateset_agents.training.config import TrainingConfig

    import bench_task

    task_name = bench_task.register(common.prompt_schedule(setting))
    return TrainingConfig(
        model_name=str(model_dir), task=task_name, output_dir=str(output_dir), seed=setting.seed,
        use_lora=True, lora_r=setting.lora_r, lora_alpha=setting.lora_alpha, lora_dropout=0.0,
        num_generations=setting.group_size, scenarios_per_iteration=setting.prompts_per_iteration,
        per_device_train_batch_size=setting.episodes_per_step, gradient_accumulation_steps=1,
        num_outer_iterations=setting.iterations, learning_rate=setting.learning_rate,
        adam_beta1=setting.adam_beta1, adam_beta2=setting.adam_beta2, max_grad_norm=setting.max_grad_norm,
        loss_type="gspo", clip_epsilon_low=setting.clip_low, clip_epsilon_high=setting.clip_high,
        kl_beta=setting.beta, max_turns=1, max_new_tokens=setting.max_new_tokens,
        temperature=setting.temperature, top_p=setting.top_p, top_k=0, thinking=True,
        rollout_concurrency=setting.prompts_per_iteration * setting.group_size,
        eval_every=0, save_every=0, report_to=["jsonl"], device="cpu", dtype="float32",
        use_vllm=use_vllm, vllm_max_model_len=1024,
    )


def train_arm(model_dir: Path, setting, workdir: Path, use_vllm: bool, vllm_python: Path) -> dict:
    from stateset_agents.training.trainer import GSPOTrainer

    import bench_task

    if use_vllm:
        os.environ["STATESET_VLLM_PYTHON"] = str(vllm_python)
    arm = "vllm" if use_vllm else "hf"
    began = time.perf_counter()
    trainer = GSPOTrainer(training_config(model_dir, setting, workdir / arm, use_vllm), log=lambda message: None)
    setup = time.perf_counter() - began
    trainer.samplers = [bench_task.ScheduledSampler(trainer.tasks[0].train_scenarios())]
    split: list[dict] = []
    record = {"arm": arm, "setup_seconds": setup, "iterations": []}
    try:
        engine = trainer.rollout_engine
        if engine is not None:  # time the two parts of the engine's sync (export, reload) from here
            export, reload = engine._export, engine.server.reload_weights

            def timed_export(policy, _export=export):
                began = time.perf_counter()
                path = _export(policy)
                split.append({"export": time.perf_counter() - began})
                return path

            def timed_reload(path, *rest, _reload=reload, **options):
                seconds = _reload(path, *rest, **options)
                split[-1]["reload"] = seconds
                return seconds

            engine._export, engine.server.reload_weights = timed_export, timed_reload
            record["server_startup_seconds"] = engine.server.startup_seconds
        for index in range(setting.iterations):
            before = len(split)
            metrics = trainer.iteration(index)
            parts = split[before] if len(split) > before else {}
            row = {key.replace("time/", ""): metrics[key] for key in
                   ("time/iteration", "time/rollout", "time/reward", "time/update", "time/weight_sync") if key in metrics}
            row.update({"completion_tokens": metrics["tokens/completion"], "reward_mean": metrics["reward/mean"],
                        "optimizer_steps": metrics["optimizer_steps"],
                        "sync_export": parts.get("export"), "sync_reload": parts.get("reload")})
            for key in ("mismatch/logprob_abs_diff", "rollout/stale_episodes"):
                if key in metrics:
                    row[key] = metrics[key]
            record["iterations"].append(row)
            log(f"[train {arm}] iteration {index}: {row['iteration']:.2f}s (rollout {row['rollout']:.2f}, update "
                f"{row['update']:.2f}, sync {row.get('weight_sync', 0.0):.2f}), {row['completion_tokens']} tokens")
        if engine is not None:
            record["server_thread_notes"] = server_thread_notes(engine.server.log_path)
    finally:
        trainer.close()
    record["trainable_parameters"] = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    return record


def summarize_training(record: dict, warmup: int) -> dict:
    window = record["iterations"][warmup:] or record["iterations"]
    keys = ("iteration", "rollout", "reward", "update", "weight_sync", "sync_export", "sync_reload",
            "completion_tokens")
    out = {}
    for key in keys:
        values = [it[key] for it in window if it.get(key) is not None]
        if values:
            out[key] = spread(values)
    out["rollout_tokens_per_second"] = spread([it["completion_tokens"] / it["rollout"] for it in window])
    return out


# --- output -----------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(stat: dict | None, digits: int = 3) -> str:
    if stat is None:
        return "–"
    text = f"{stat['median']:.{digits}f}"
    if round(stat["min"], digits) != round(stat["max"], digits):
        text += f" ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"
    return text


def markdown(results: dict) -> str:
    meta, machine = results["provenance"], results["machine"]
    lines = ["# vLLM vs transformers rollouts", "",
             f"Command: `{meta['command']}`", "",
             f"Commit: {meta['git']['describe']}. Date: {meta['date']}.", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, no GPU; this process's torch threads "
             f"{results['settings']['threads']}; load average {machine['load_before']} before, "
             f"{machine['load_after']} after; CPU lock {LOCK} held during the run: {machine['cpu_lock_held']}. "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".", ""]
    notes = results.get("server_thread_notes") or []
    if notes:
        lines += ["vLLM server CPU binding (from its log): " + "; ".join(f"`{n}`" for n in notes[:4]), ""]
    s = results["settings"]
    lines += ["## Rollout throughput", "",
              f"{s['prompts']} customer_service first turns (system prompt, opening message, tool declarations; "
              f"encoded by the agent), up to {s['max_new_tokens']} new tokens each, temperature {TEMPERATURE}, top_p 1, "
              f"one seed per prompt, same prompts and seeds for both engines. Concurrency c: calls of c prompts "
              f"(HF: one batched `generate` of c rows; vLLM: c requests in flight). One warm-up call per pass; "
              f"{s['repeats']} repeat(s), median (min–max).", ""]
    for record in results["throughput"]:
        lines.append(f"- `{record['model']}`: {record['parameters']:,} parameters ({record['description']}); prompts "
                     f"{record['prompt_tokens']['min']}–{record['prompt_tokens']['max']} tokens; vLLM server start "
                     f"{record['server_startup_seconds']:.1f} s")
    lines += ["", "| model | c | HF tokens/s | vLLM tokens/s | vLLM / HF | HF s/call | vLLM s/call | tokens HF / vLLM |",
              "|---|---|---|---|---|---|---|---|"]
    for row in results["throughput_table"]:
        lines.append(f"| {row['model']} | {row['concurrency']} | {fmt(row['hf']['tokens_per_second'], 1)} | "
                     f"{fmt(row['vllm']['tokens_per_second'], 1)} | {row['vllm_over_hf']:.2f}x | "
                     f"{fmt(row['hf']['seconds_per_call'])} | {fmt(row['vllm']['seconds_per_call'])} | "
                     f"{row['hf']['completion_tokens']['median']:.0f} / {row['vllm']['completion_tokens']['median']:.0f} |")
    if results.get("training"):
        t = results["training"]
        lines += ["", "## Training iteration, use_vllm off / on", "",
                  f"GSPOTrainer, bench model `{t['model']}` at the MLA widths, `bench_ours.build_trainer`'s config: "
                  f"{t['setting']['prompts_per_iteration']} prompts x {t['setting']['group_size']} completions of up to "
                  f"{t['setting']['max_new_tokens']} tokens, {t['setting']['steps_per_rollout']} optimizer steps, LoRA "
                  f"r={t['setting']['lora_r']}; {t['iterations']} iteration(s), "
                  + (f"the first a warm-up, median (min–max) of the other {t['iterations'] - t['warmup']}."
                     if t["warmup"] else "no warm-up (quick).")
                  + " Seconds per iteration, from the trainer's metrics.", "",
                  "| arm | iteration | rollout | reward | update | weight_sync | rollout tokens/s | setup |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm, label in (("hf", "use_vllm off (transformers)"), ("vllm", "use_vllm on (managed server)")):
            a, rec = t["summary"][arm], t["runs"][arm]
            setup = f"{rec['setup_seconds']:.1f}" + (f" (server start {rec['server_startup_seconds']:.1f})"
                                                      if "server_startup_seconds" in rec else "")
            lines.append(f"| {label} | {fmt(a.get('iteration'))} | {fmt(a.get('rollout'))} | {fmt(a.get('reward'), 4)} | "
                         f"{fmt(a.get('update'))} | {fmt(a.get('weight_sync'))} | "
                         f"{fmt(a.get('rollout_tokens_per_second'), 0)} | {setup} |")
        lines += ["", "With vLLM, `update` includes the trainer's recomputation of π_old (one forward over the batch)."]
    lines += ["", "## Weight sync (export + in-place reload)", "",
              "| model | where | export s | reload s | total s |", "|---|---|---|---|---|"]
    if results.get("training"):
        a = results["training"]["summary"]["vllm"]
        lines.append(f"| {results['training']['model']} | training (LoRA merged), per iteration (`time/weight_sync`) | "
                     f"{fmt(a.get('sync_export'))} | {fmt(a.get('sync_reload'))} | {fmt(a.get('weight_sync'))} |")
    for record in results["throughput"]:
        rounds = record.get("sync_rounds") or []
        if rounds:
            lines.append(f"| {record['model']} | plain model, {len(rounds)} rounds | "
                         f"{fmt(spread([r['export'] for r in rounds]))} | {fmt(spread([r['reload'] for r in rounds]))} | "
                         f"{fmt(spread([r['total'] for r in rounds]))} |")
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,small", help="bench models (common.MODELS) for the throughput")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4, help="training iterations per arm (the first a warm-up)")
    parser.add_argument("--sync-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (transformers)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results/vllm_rollouts[_quick]_<models>_<commit>")
    parser.add_argument("--quick", action="store_true", help=(
        "smoke test: tiny, concurrency 1,8, 8 prompts x 16 tokens, 1 repeat, 1 training iteration per arm at smoke size"))
    args = parser.parse_args(argv)

    from stateset_agents.rollout.vllm_server import VLLMNotAvailableError, find_vllm_python

    try:
        vllm_python = find_vllm_python()
    except VLLMNotAvailableError as error:
        print(f"vllm_rollouts: skipped, nothing measured: {error}")
        return 0

    if args.quick:
        args.models, args.concurrency, args.prompts, args.max_new_tokens = "tiny", "1,8", 8, 16
        args.repeats, args.iterations, args.sync_rounds = 1, 1, 2
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    models = args.models.split(",")
    out_dir = Path(args.out_dir or HERE / "results" / common.result_stem("vllm_rollouts", "-".join(models), args.quick))

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    results = {
        "provenance": {"command": command_line(),
                       "git": git_state(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
        "machine": {"cpu": common.cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_before": [round(x, 2) for x in os.getloadavg()], "cpu_lock_held": lock_is_held()},
        "versions": {**common.versions(), "vllm": vllm_version(vllm_python)},
        "settings": {"models": models, "concurrency": args.concurrency, "prompts": args.prompts,
                     "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "threads": args.threads,
                     "iterations": args.iterations, "quick": args.quick, "mla_widths": MLA_WIDTHS},
        "throughput": [], "throughput_table": [],
    }
    results["versions"].pop("trl", None)
    if not results["machine"]["cpu_lock_held"]:
        log(f"note: {LOCK} is not held: on a shared machine run under `flock {LOCK} ...`")
    with tempfile.TemporaryDirectory(prefix="vllm-rollouts-") as tmp:
        workdir = Path(tmp)
        for name in models:
            record = throughput(name, args, workdir, vllm_python)
            results["throughput"].append(record)
            results["throughput_table"] += summarize_throughput(record)
        if not args.skip_training:
            setting = common.SETTINGS["gspo_beta0"]
            setting = (replace(common.smoke(setting), warmup_iterations=0, timed_iterations=1) if args.quick else
                       replace(setting, warmup_iterations=1, timed_iterations=max(args.iterations - 1, 1)))
            model_dir = ensure_model("tiny")
            runs = {}
            for use_vllm in (False, True):
                runs["vllm" if use_vllm else "hf"] = train_arm(model_dir, setting, workdir / "train", use_vllm,
                                                                vllm_python)
            results["training"] = {
                "model": "tiny", "setting": {**json.loads(common.setting_to_json(setting))},
                "iterations": setting.iterations, "warmup": setting.warmup_iterations, "runs": runs,
                "summary": {arm: summarize_training(rec, setting.warmup_iterations) for arm, rec in runs.items()},
            }
            results["server_thread_notes"] = runs["vllm"].get("server_thread_notes", [])
        if not results.get("server_thread_notes") and results["throughput"]:
            results["server_thread_notes"] = results["throughput"][0].get("server_thread_notes", [])
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (out_dir / "results.md").write_text(text)
    print(text)
    log(f"wrote {out_dir}/results.json and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
