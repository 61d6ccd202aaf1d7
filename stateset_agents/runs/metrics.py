"""Training metrics: what every logged key means, and the sinks that record them.

`METRIC_DOCS` is the single place where a logged metric is documented: the trainer logs one
flat dict per iteration whose keys are listed there (keys with a `<placeholder>` are patterns,
one key per reward component or episode end reason). `MetricsLogger` fans each dict out to:

- `console`: a `rich` progress bar over iterations and one compact line per iteration (or per
  `console_every` iterations: `log_every`);
- `jsonl`: `output_dir/metrics.jsonl`, one JSON object per `log` call, appended and flushed
  line by line, so a resumed run continues the same file and a crash loses at most one line;
- `wandb`: Weights & Biases (`WANDB_MODE=offline` works without a network).

Free-text events (resume, task boundaries) go to the console and into metrics.jsonl as
`{"event": ..., "iteration": ..., "time": ...}` lines; `read_metrics` returns both kinds and
`split_events` separates them.

Resuming: a crash between logging iteration N and saving its checkpoint leaves lines that the
resumed run logs again. `truncate_metrics(output_dir, iteration)` (called by the trainer before
it logs anything, with the iteration it starts from: the checkpoint's, or 0) cuts metrics.jsonl
right after the last metric line at or before that iteration, atomically, so every iteration
appears once; the trainer then logs a resume event.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_DOCS: dict[str, str] = {
    # --- bookkeeping
    "iteration": "1-based index of the training iteration just completed (rollout + update), "
                 "i.e. the number of iterations done, the same number a checkpoint saved right "
                 "after it carries; continues across resumes. Used as the W&B step and as the "
                 "progress bar position.",
    "task": "Name of the task the iteration trained on (continual learning switches it; the "
            "report draws a boundary where it changes).",
    # --- rewards and episodes
    "reward/mean": "Mean total reward over all trajectories of the iteration's rollout batch.",
    "reward/std": "Standard deviation of the total reward over the rollout batch.",
    "reward/<component>": "Mean over the rollout batch of one reward component's score "
                          "(one key per component of the reward function, e.g. reward/empathy).",
    "success_rate": "Fraction of the batch's episodes that reached the task's success criterion.",
    "episode/turns_mean": "Mean number of assistant turns per episode.",
    "episode/cut_off_turns": "Share of the agent's sampled turns (scored episodes) that never sampled the "
                             "end-of-turn token: cut off at max_new_tokens, so a tool call or answer may be "
                             "missing its end. Above a few percent, max_new_tokens is too small for the task.",
    "episode/completion_tokens_mean": "Mean number of sampled (trained) tokens per episode, "
                                      "summed over its turns.",
    "episode/end_reasons/<reason>": "Number of the batch's episodes that ended for <reason> "
                                    "(success, user_done, user_gave_up, max_turns, unknown; context_limit: "
                                    "the next prompt was over max_prompt_tokens; user_error: the LLM customer "
                                    "could not reply and the episode was dropped).",
    "groups/zero_variance": "Number of groups whose rewards were all equal: advantages are zero, "
                            "so they contribute no policy gradient.",
    "groups/total": "Number of groups (prompts, each sampled group_size times) in the batch.",
    # --- loss and policy ratio (training/losses.py computes every term)
    "loss/policy": "Policy term of the loss, -J: the negated GSPO/GRPO clipped surrogate objective "
                   "(importance-weighted when a separate sampler's logprobs are given), averaged "
                   "over the iteration's optimizer steps.",
    "loss/kl_ref": "Reference-KL term of the loss: kl_beta x kl/ref, averaged over optimizer steps.",
    "loss/kl_teacher": "LwF term of the loss: kl_penalty_beta x continual/kl_teacher, averaged over "
                       "optimizer steps.",
    "loss/total": "Loss that was back-propagated: loss/policy + loss/kl_ref + loss/kl_teacher (the "
                  "terms that are on), averaged over optimizer steps.",
    "ratio/mean": "Mean importance ratio pi_theta/pi_old (sequence-level for GSPO, token-level "
                  "for GRPO) over the iteration's optimizer steps; 1 on the first step.",
    "ratio/min": "Smallest importance ratio seen in the iteration (over every micro-batch of every "
                 "optimizer step).",
    "ratio/max": "Largest importance ratio seen in the iteration (over every micro-batch of every "
                 "optimizer step).",
    "ratio/first_step_mean": "ratio/mean of the iteration's first optimizer step, where pi_theta "
                             "= pi_old: it should be 1 up to float noise; a deviation means the "
                             "trainer does not score what the sampler sampled.",
    "clip/low_fraction": "Fraction of ratios clipped at 1 - epsilon_low where clipping was active "
                         "(negative advantage).",
    "clip/high_fraction": "Fraction of ratios clipped at 1 + epsilon_high where clipping was active "
                          "(positive advantage).",
    "kl/ref": "Estimated KL(pi_theta || pi_ref) per sampled token to the reference policy "
              "(the model with the LoRA adapter disabled), averaged over optimizer steps.",
    "tokens/trained": "Sampled tokens the iteration's optimizer steps trained on (a count: summed "
                      "over micro-batches and steps; replayed episodes included).",
    "episodes/trained": "Episodes (GSPO sequences with sampled tokens) the iteration's optimizer "
                        "steps trained on (a count, summed; replayed episodes included).",
    "entropy": "Mean per-token entropy of the policy over sampled tokens (nats).",
    "grad_norm": "Global L2 norm of the gradients before clipping, averaged over optimizer steps.",
    "lr": "Learning rate of the iteration's optimizer steps (mean over its steps).",
    # --- throughput and step accounting
    "tokens/completion": "Completion tokens sampled in the iteration (all episodes, all turns).",
    "tokens/per_second": "Sampled completion tokens per second of rollout time (tokens/completion "
                         "/ time/rollout).",
    "optimizer_steps": "Optimizer steps taken in this iteration (skipped steps excluded).",
    "skipped_steps/nonfinite": "Optimizer steps skipped in this iteration because the loss or the "
                               "gradient norm was NaN/inf.",
    "rewards/skipped": "Trajectories excluded in this iteration because their reward could not be "
                       "computed or was not finite.",
    "time/rollout": "Wall-clock seconds generating episodes (sampling + environment steps).",
    "time/reward": "Wall-clock seconds computing rewards (including LLM judges).",
    "time/update": "Wall-clock seconds in policy updates (forward, backward, optimizer).",
    "time/iteration": "Wall-clock seconds for the whole iteration (rollout + reward + update + "
                      "logging/checkpoint overhead).",
    # --- a separate sampling engine (use_vllm)
    "mismatch/logprob_abs_diff": "Mean |log mu - log pi_old| per sampled token between the sampling engine "
                                 "(vLLM) and the trainer's recomputed pi_old, before the update: how far "
                                 "the engine's numbers are from the trainer's.",
    "mismatch/k3_kl": "k3 estimate of KL(mu || pi_old) per sampled token (r = pi_old/mu: r - 1 - log r), "
                      "with samples from the engine mu.",
    "tis/weight_mean": "Mean truncated importance weight min(pi_old/mu, C) applied to the policy term "
                       "(per sequence for GSPO, per token for GRPO), averaged over optimizer steps.",
    "tis/weight_min": "Smallest truncated importance weight in the iteration.",
    "tis/weight_max": "Largest truncated importance weight in the iteration (C when the cap acted).",
    "rollout/stale_episodes": "Episodes of the iteration sampled by weights older than the policy being "
                              "trained (e.g. vllm_sync='none'); trained off-policy through pi_old and the "
                              "importance weight, never as on-policy.",
    "time/weight_sync": "Wall-clock seconds making the sampling engine use the updated policy (export and "
                        "reload, or adapter load).",
    # --- the LLM customer and the LLM judge (training/llm_setup.py)
    "user/llm_requests": "Requests sent to the LLM customer's model since the previous iteration's count (the "
                         "evaluation in between included); cache hits are not requests.",
    "user/llm_cache_hits": "LLM customer replies answered from the cache (llm_cache/user.jsonl) since the "
                           "previous iteration's count: the same scenario, conversation and seed seen before.",
    "user/llm_failures": "Episodes of the batch dropped (not scored, not trained) because the LLM customer "
                         "could not reply after its retries; each is logged with the scenario and the error.",
    "judge/requests": "Requests sent to the LLM judge since the previous iteration's count (the evaluation in "
                      "between included): one per episode (pointwise) or per group (group mode), cache hits "
                      "excluded.",
    "judge/cache_hits": "LLM judge answers taken from the cache (llm_cache/judge.jsonl) since the previous "
                        "iteration's count.",
    "judge/skipped": "Episodes the judge could not score since the previous iteration's count (endpoint "
                     "failed, or an answer that is not the JSON asked for); their reward leaves the judge out "
                     "(the other components renormalised). Each skip is logged with the reason.",
    # --- evaluation
    "eval/reward_mean": "Mean total reward on the held-out evaluation scenarios.",
    "eval/reward_std": "Standard deviation of the total reward on the evaluation scenarios.",
    "eval/success_rate": "Success rate on the held-out evaluation scenarios.",
    "eval/user_failures": "Evaluation episodes dropped because the LLM customer could not reply (left out "
                          "of eval/reward_mean and eval/success_rate).",
    # --- continual learning
    "continual/kl_teacher": "KL(pi_theta || pi_teacher) per sampled token (KL(pi_teacher || pi_theta) with "
                            "lwf_divergence='forward') to the frozen previous-task adapter (distillation / "
                            "forgetting signal); with lwf_rows='replayed' the current task's episodes count as 0, "
                            "as in the loss.",
    "continual/replay_fraction": "Fraction of the rollout batch drawn from the replay buffer of "
                                 "earlier tasks.",
    "continual/buffer_size": "Number of items held in the replay buffer.",
}

# Keys logged only under some settings (key or pattern -> when). Every other key of METRIC_DOCS
# is in every iteration's record; tests/test_metrics.py runs iterations that log all of them.
METRIC_CONDITIONS: dict[str, str] = {
    "loss/kl_ref": "kl_beta > 0",
    "mismatch/logprob_abs_diff": "use_vllm (or recompute_old_logprobs)",
    "mismatch/k3_kl": "use_vllm (or recompute_old_logprobs)",
    "tis/weight_mean": "use_vllm (or recompute_old_logprobs)",
    "tis/weight_min": "use_vllm (or recompute_old_logprobs)",
    "tis/weight_max": "use_vllm (or recompute_old_logprobs)",
    "rollout/stale_episodes": "use_vllm",
    "time/weight_sync": "use_vllm",
    "kl/ref": "kl_beta > 0",
    "loss/kl_teacher": "continual_strategy with lwf, from the second task on",
    "continual/kl_teacher": "continual_strategy with lwf, from the second task on",
    "continual/replay_fraction": "continual_strategy with replay",
    "continual/buffer_size": "continual_strategy with replay",
    "eval/reward_mean": "eval_every > 0, every eval_every iterations",
    "eval/reward_std": "eval_every > 0, every eval_every iterations",
    "eval/success_rate": "eval_every > 0, every eval_every iterations",
    "reward/<component>": "a reward with components (the tasks' default rewards have them)",
    "user/llm_requests": "user_simulator='llm'",
    "user/llm_cache_hits": "user_simulator='llm'",
    "user/llm_failures": "user_simulator='llm'",
    "judge/requests": "judge_weight > 0",
    "judge/cache_hits": "judge_weight > 0",
    "judge/skipped": "judge_weight > 0",
    "eval/user_failures": "user_simulator='llm' and eval_every > 0, every eval_every iterations",
}
LLM_CONDITIONS = ("user_simulator='llm'", "judge_weight > 0",
                  "user_simulator='llm' and eval_every > 0, every eval_every iterations")
"""Conditions of the keys tests/test_llm_user_training.py checks (the LLM customer and judge runs)."""

# How a statistic combines over the micro-batches of an optimizer step and over the steps of an
# iteration: extremes stay extremes, counts add up; every other key is a (weighted) mean.
METRIC_REDUCTIONS: dict[str, str] = {
    "ratio/min": "min", "ratio/max": "max", "tokens/trained": "sum", "episodes/trained": "sum",
    "tis/weight_min": "min", "tis/weight_max": "max",
}


def reduce_metric(key: str, values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Combine `values` of metric `key` (see METRIC_REDUCTIONS); means use `weights` (default: equal)."""
    if not values:
        raise ValueError(f"no values to reduce for {key!r}")
    how = METRIC_REDUCTIONS.get(key, "mean")
    if how == "min":
        return float(min(values))
    if how == "max":
        return float(max(values))
    if how == "sum":
        return float(sum(values))
    if weights is None:
        return float(sum(values) / len(values))
    return float(sum(w * v for w, v in zip(weights, values)) / sum(weights))


VALID_SINKS = ("console", "jsonl", "wandb")
METRICS_FILENAME = "metrics.jsonl"
_PLACEHOLDER = re.compile(r"<[^>]+>")


def describe_metric(key: str) -> str | None:
    """The documentation of `key`, matching `<placeholder>` patterns; None when undocumented."""
    if key in METRIC_DOCS:
        return METRIC_DOCS[key]
    for pattern, doc in METRIC_DOCS.items():
        if "<" in pattern:
            regex = "[^/]+".join(re.escape(part) for part in _PLACEHOLDER.split(pattern))
            if re.fullmatch(regex, key):
                return doc
    return None


def _to_jsonable(value: Any) -> Any:
    """Numbers from numpy/torch become Python scalars; anything else becomes its str()."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _plain(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round-tripped copy: scalars and strings as the trainer would read them back."""
    return json.loads(json.dumps(dict(metrics), default=_to_jsonable))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file (or the one in directory `path`), events included.

    A truncated last line (the process died mid-write) is skipped; a malformed line elsewhere
    raises ValueError naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILENAME
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
    return records


def truncate_metrics(output_dir: str | Path, iteration: int) -> int:
    """Cut output_dir/metrics.jsonl after its last metric line with `iteration` <= `iteration`.

    What goes is what a run restarted from the checkpoint of `iteration` logs again: later
    iterations' lines and the events between them (e.g. the task boundary before the next
    iteration). `iteration=0` (no checkpoint) drops every line. A truncated last line goes too,
    so appending continues on a fresh line. Atomic: the kept lines are written to a temporary
    file, fsync'ed and moved over the old one with os.replace. Returns the number of records
    dropped (0, and nothing written, when the file is already consistent or absent).
    """
    path = Path(output_dir) / METRICS_FILENAME
    if not path.is_file():
        return 0
    records = read_metrics(path)
    keep = 0
    for position, record in enumerate(records):
        step = record.get("iteration")
        if "event" not in record and isinstance(step, int) and step <= iteration:
            keep = position + 1
    text = "".join(json.dumps(r) + "\n" for r in records[:keep])
    if text == path.read_text(encoding="utf-8"):
        return 0
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)
    return len(records) - keep


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems refuse it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def split_events(records: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Split `read_metrics` output into (metric records, event records)."""
    metrics = [dict(r) for r in records if "event" not in r]
    events = [dict(r) for r in records if "event" in r]
    return metrics, events


def _fmt(value: Any, spec: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)
    return str(value)


def format_console_line(metrics: Mapping[str, Any], total_iterations: int | None = None) -> str:
    """One compact line with the key numbers present in `metrics` (absent ones are left out)."""
    parts: list[str] = []
    if "iteration" in metrics:
        total = f"/{total_iterations}" if total_iterations else ""
        parts.append(f"iter {metrics['iteration']}{total}")
    if "task" in metrics:
        parts.append(str(metrics["task"]))
    if "reward/mean" in metrics:
        std = f"±{_fmt(metrics['reward/std'], '.3f')}" if "reward/std" in metrics else ""
        parts.append(f"reward {_fmt(metrics['reward/mean'], '.3f')}{std}")
    if "success_rate" in metrics:
        parts.append(f"success {_fmt(metrics['success_rate'], '.0%')}")
    if "clip/low_fraction" in metrics or "clip/high_fraction" in metrics:
        low = _fmt(metrics.get("clip/low_fraction", float("nan")), ".3f")
        high = _fmt(metrics.get("clip/high_fraction", float("nan")), ".3f")
        parts.append(f"clip {low}/{high}")
    # entropy: a sharp warm start whose sampled-token entropy keeps rising is drifting away, not learning
    simple = [("kl/ref", "kl", ".4f"), ("entropy", "entropy", ".3f"), ("grad_norm", "gnorm", ".3f"),
              ("eval/reward_mean", "eval", ".3f"), ("eval/success_rate", "eval success", ".0%"),
              ("time/iteration", "time", ".1f")]
    for key, label, spec in simple:
        if key in metrics:
            parts.append(f"{label} {_fmt(metrics[key], spec)}{'s' if key.startswith('time') else ''}")
    return " | ".join(parts)


class _ConsoleSink:
    """A rich progress bar over iterations plus one printed line per `log` call."""

    def __init__(self, total_iterations: int | None, every: int = 1) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self.total = total_iterations
        self.every = every
        self.console = Console()
        self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self.task_id = self.progress.add_task("training", total=total_iterations)
        self.progress.start()

    def log(self, metrics: Mapping[str, Any]) -> None:
        iteration = metrics.get("iteration")
        line = format_console_line(metrics, self.total) if self._prints(iteration) else ""
        if line:
            self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if isinstance(iteration, int):
            self.progress.update(self.task_id, completed=iteration)

    def _prints(self, iteration: Any) -> bool:
        """A line every `every` iterations and for the last one (records without an iteration: always)."""
        if not isinstance(iteration, int) or self.every == 1:
            return True
        return iteration % self.every == 0 or iteration == self.total

    def event(self, text: str) -> None:
        self.progress.console.print(f"[event] {text}", highlight=False, markup=False,
                                    soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


class _JsonlSink:
    """Appends one JSON line per record to output_dir/metrics.jsonl, flushed per line."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / METRICS_FILENAME
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(record), default=_to_jsonable) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise ImportError(
            "report_to includes 'wandb' but the wandb package is not installed: "
            "`pip install wandb` (or `pip install 'stateset-agents[training]'`), "
            "or remove 'wandb' from report_to."
        ) from err
    return wandb


class _WandbSink:
    """A W&B run owned by the logger; `WANDB_MODE=offline` writes it locally."""

    def __init__(self, output_dir: Path, project: str | None, run_name: str | None,
                 config: Mapping[str, Any] | None) -> None:
        self.wandb = _import_wandb()
        self.run = self.wandb.init(project=project, name=run_name,
                                   config=dict(config) if config else None, dir=str(output_dir))

    def log(self, metrics: Mapping[str, Any]) -> None:
        step = metrics.get("iteration")
        self.run.log(dict(metrics), step=step if isinstance(step, int) else None)

    def close(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class MetricsLogger:
    """Fan each metrics dict out to the console, metrics.jsonl and/or W&B.

    Usage::

        with MetricsLogger(out, report_to=["console", "jsonl"], total_iterations=100) as log:
            log.log_event("task boundary: customer_service -> sales")
            log.log({"iteration": 1, "reward/mean": 0.4, ...})

    `report_to` takes any of "console", "jsonl", "wandb" ("none" or an empty list: nothing).
    `console_every` (TrainingConfig.log_every) thins the console to one line every N iterations
    (and the last); metrics.jsonl and W&B get every record. Keys are documented in `METRIC_DOCS`. `start_iteration` (a resumed run's checkpoint
    iteration) is the iteration events carry until the first `log`.
    """

    def __init__(self, output_dir: str | Path, report_to: Sequence[str] | str = ("console", "jsonl"),
                 wandb_project: str | None = None, wandb_run_name: str | None = None,
                 config: Mapping[str, Any] | None = None,
                 total_iterations: int | None = None, start_iteration: int | None = None,
                 console_every: int = 1) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.report_to = _validate_sinks(report_to)
        # a resumed run's events (the resume itself) belong to the checkpoint's iteration
        self.last_iteration: int | None = start_iteration
        self._closed = False
        self._wandb = (_WandbSink(self.output_dir, wandb_project, wandb_run_name, config)
                       if "wandb" in self.report_to else None)
        self._jsonl = _JsonlSink(self.output_dir) if "jsonl" in self.report_to else None
        if console_every < 1:
            raise ValueError(f"console_every must be >= 1, got {console_every}")
        self._console = _ConsoleSink(total_iterations, console_every) if "console" in self.report_to else None

    @property
    def jsonl_path(self) -> Path:
        """Where metrics.jsonl lives (written only when "jsonl" is a sink)."""
        return self.output_dir / METRICS_FILENAME

    def log(self, metrics: Mapping[str, Any]) -> None:
        """Record one metrics dict (normally one per iteration, `iteration` included)."""
        self._check_open()
        record = _plain(metrics)
        if isinstance(record.get("iteration"), int):
            self.last_iteration = record["iteration"]
        if self._jsonl:
            self._jsonl.write(record)
        if self._wandb:
            self._wandb.log(record)
        if self._console:
            self._console.log(record)

    def log_event(self, text: str) -> None:
        """Record a free-text event (e.g. "resumed from checkpoint X") on the console and jsonl."""
        self._check_open()
        if self._jsonl:
            self._jsonl.write({"event": text, "iteration": self.last_iteration,
                               "time": time.time()})
        if self._console:
            self._console.event(text)

    def close(self, exit_code: int = 0) -> None:
        """Flush and close every sink (idempotent); `exit_code` != 0 marks the W&B run failed."""
        if self._closed:
            return
        self._closed = True
        if self._console:
            self._console.close()
        if self._jsonl:
            self._jsonl.close()
        if self._wandb:
            self._wandb.close(exit_code)

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exit_code=1 if exc_type is not None else 0)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MetricsLogger is closed")


def _validate_sinks(report_to: Sequence[str] | str) -> tuple[str, ...]:
    sinks = [report_to] if isinstance(report_to, str) else list(report_to)
    sinks = [s.lower() for s in sinks if s.lower() != "none"]
    unknown = [s for s in sinks if s not in VALID_SINKS]
    if unknown:
        raise ValueError(f"unknown report_to sink(s) {unknown}; choose from {list(VALID_SINKS)} "
                         "or 'none'")
    return tuple(dict.fromkeys(sinks))
