"""`stateset-agents eval`: held-out reward, success rate and reward components, with 95% intervals.

    stateset-agents eval --model tiny-kimi-k2.5 --adapter outputs/customer_service_gspo --task customer_service
    stateset-agents eval --model M --adapter RUN --task customer_service,sales --samples 4 --json eval.json
    stateset-agents eval --model M --adapter RUN --against M          # the run's adapter vs the base model
    stateset-agents eval --model M --adapter RUN_B --against RUN_A    # two checkpoints side by side

What is evaluated. `--model` is loaded with the HF backend (transformers); with `--vllm-url` the policy's
text prompts are sampled on that running vLLM server instead (it must serve the policy: e.g. `export
--merge` then `serve --run`; its tokenizer is checked), each episode with its own seed. `--adapter` is one of

- a PEFT adapter directory (it holds `adapter_config.json`);
- a training run directory (it holds `checkpoints/`): its latest complete checkpoint is used;
- a checkpoint directory (`checkpoints/iter_NNNNNN`): its `adapter/`, or `model/` for a full fine-tune.

The output says which directory was used. An adapter whose `adapter_config.json` names another base
model than `--model` is refused before anything loads (`--ignore-base-mismatch` to override: the
names compared are the last path component or hub id, so a renamed copy of the same model would be
refused too); one whose tensors do not fit the model is refused when it loads. With an adapter from a
run, the run's sampling settings (`config.yaml`: max_turns, max_new_tokens, temperature, top_p, top_k,
thinking; system_prompt for the run's own tasks) are the defaults, so the numbers match the run's own
evaluation; otherwise the Kimi-K2.5 preset for `--model`. Flags override either.

Episodes. Each task's first `--scenarios` scenarios of `--split` (all by default), each sampled
`--samples` times, run through the real environment loop (tools, rule-based user) and scored by the
task's reward, exactly as `training.evaluation.evaluate` does: episode (i, k) of a task samples with
seed ``(seed * 1_000_003 + i) * 1_000_003 + k`` whatever else is in its batch (`episode_seed`; a
test holds it equal to `evaluate`'s means). So a `--seed` fixes every sampled token: the same seed
gives the same JSON (no timings or dates in it), another seed samples other conversations (each
episode's `sample_sha256` changes), and `--against` runs the second policy on the same scenarios
with the same seeds.

Which interval, and why: a Student t interval over scenario means. The samples of one scenario are
averaged first (reward, success, each component), then ``mean +- t(0.975, n - 1) * sd / sqrt(n)`` over
the n scenario means. The scenario is the unit that was drawn from the task (samples of one scenario
share its difficulty), so treating every episode as independent would make the interval too narrow
when `--samples` > 1; t rather than normal because n is often small (8-30 scenarios); and it is a
closed form, so the output is deterministic without a resampling seed. `--against` pairs the two
policies' episodes by (scenario, sample), both run with the same seed, and gives the t interval of
the per-scenario mean differences (policy minus against): the shared scenario difficulty cancels,
so the difference is narrower than the two intervals suggest. Limits: with one scenario there is no
interval (n/a); when every scenario gives the same value (e.g. no success anywhere) the width is 0,
which reflects the data seen, not certainty; the bounds of the success rate and of components whose
values all lie in [0, 1] (the built-in ones) are clipped to [0, 1] (not those of differences). Episodes whose
reward failed are skipped (counted in the JSON) and a pair counts only when both episodes were scored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "EvalInputError", "WeightsSource", "Candidate", "EvalSettings", "add_eval_arguments", "eval_from_args",
    "resolve_weights", "episode_seed", "t_interval", "student_t_quantile", "PolicyLoader",
]

LEVEL = 0.95
INTERVAL_METHOD = ("Student t interval over scenario means (each scenario's samples averaged first); "
                   "difference: paired by scenario+sample, t interval over per-scenario mean differences")


class EvalInputError(ValueError):
    """A bad input to `eval` or `chat` (reported as one `error:` line, exit status 2)."""


# ----------------------------------------------------------------------------- statistics


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with `df` degrees of freedom, by bisection."""
    if not 0.5 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0


def t_interval(values: list[float], level: float = LEVEL, bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean and two-sided t interval of `values` (None bounds with fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    half = student_t_quantile(0.5 + level / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}


# ----------------------------------------------------------------------------- what to evaluate


@dataclass
class WeightsSource:
    """Trained weights to put on a base model: a PEFT adapter directory, or a full fine-tune's checkpoint."""

    given: str
    kind: str  # "adapter" (path: a PEFT adapter dir) | "full" (path: a checkpoint dir holding model/)
    path: Path
    description: str
    run_dir: Path | None = None
    checkpoint: str | None = None


def resolve_weights(given: str) -> WeightsSource:
    """What `--adapter given` points at (see the module docstring); EvalInputError otherwise."""
    from stateset_agents.runs.checkpoints import (
        ADAPTER_DIRNAME, CHECKPOINTS_DIRNAME, MODEL_DIRNAME, is_complete, latest_checkpoint,
    )

    path = Path(given).expanduser()
    if not path.exists():
        raise EvalInputError(f"adapter path {given} does not exist (pass a PEFT adapter directory, a training run "
                             f"directory or one of its checkpoints)")
    if not path.is_dir():
        raise EvalInputError(f"adapter path {given} is a file; pass the directory that holds adapter_config.json, "
                             f"a training run directory or a checkpoint directory")
    if (path / "adapter_config.json").is_file():
        return WeightsSource(given, "adapter", path, f"adapter {path}")
    run_dir = None
    if (path / CHECKPOINTS_DIRNAME).is_dir():
        run_dir = path
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise EvalInputError(f"run directory {given} has no complete checkpoint under {CHECKPOINTS_DIRNAME}/ "
                                 f"(was it saved? save_every)")
        prefix = f"run {path}, latest checkpoint {checkpoint.name}"
    elif (path / ADAPTER_DIRNAME).is_dir() or (path / MODEL_DIRNAME).is_dir():
        if not is_complete(path):
            raise EvalInputError(f"checkpoint {given} is incomplete (no COMPLETE marker: its save was interrupted); "
                                 f"use another checkpoint")
        checkpoint = path
        if path.parent.name == CHECKPOINTS_DIRNAME:
            run_dir = path.parent.parent
        prefix = f"checkpoint {path}"
    else:
        raise EvalInputError(f"{given} is neither a PEFT adapter directory (no adapter_config.json), a training run "
                             f"directory (no {CHECKPOINTS_DIRNAME}/) nor a checkpoint (no {ADAPTER_DIRNAME}/ or "
                             f"{MODEL_DIRNAME}/)")
    adapter = checkpoint / ADAPTER_DIRNAME
    if (adapter / "adapter_config.json").is_file():
        return WeightsSource(given, "adapter", adapter, f"{prefix} ({adapter})", run_dir, checkpoint.name)
    if (checkpoint / MODEL_DIRNAME).is_dir():
        return WeightsSource(given, "full", checkpoint, f"{prefix} (full fine-tune: {checkpoint / MODEL_DIRNAME})",
                             run_dir, checkpoint.name)
    raise EvalInputError(f"checkpoint {checkpoint} holds neither {ADAPTER_DIRNAME}/adapter_config.json nor "
                         f"{MODEL_DIRNAME}/")


_HUB_CACHE_PATH = re.compile(r"models--([^/\\]+)--([^/\\]+)[/\\]snapshots")


def model_identity(name_or_path: str) -> str:
    """A comparable name for a model: the hub id of a hub-cache snapshot path, else the last path component
    (an embedded name, e.g. tiny-kimi-k2.5, is its built directory's name)."""
    text = str(name_or_path).rstrip("/\\")
    match = _HUB_CACHE_PATH.search(text)
    if match:
        return f"{match.group(1)}/{match.group(2)}".lower()
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not Path(text).exists():
        return text.lower()
    return Path(text).name.lower()


def check_base_model(weights: WeightsSource, model: str) -> None:
    """Refuse an adapter whose adapter_config.json names another base model than `model`."""
    if weights.kind != "adapter":
        return
    try:
        recorded = json.loads((weights.path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise EvalInputError(f"{weights.path / 'adapter_config.json'} cannot be read as JSON ({error})") from None
    if recorded and model_identity(recorded) != model_identity(model):
        raise EvalInputError(
            f"adapter {weights.given} was trained on base model {model_identity(recorded)!r} ({recorded}), not on "
            f"--model {model!r}; pass --model {model_identity(recorded)} (or --ignore-base-mismatch if it is the same "
            f"model under another name)")


@dataclass
class Candidate:
    """One policy to evaluate: a base model, with trained weights or without."""

    label: str  # "policy" | "against"
    model: str
    weights: WeightsSource | None = None

    def describe(self) -> str:
        return f"{self.model} + {self.weights.description}" if self.weights else f"{self.model} (no adapter)"

    def to_json(self) -> dict[str, Any]:
        weights = self.weights
        return {"model": self.model, "adapter": weights.given if weights else None,
                "weights": str(weights.path) if weights else None, "weights_kind": weights.kind if weights else None,
                "checkpoint": weights.checkpoint if weights else None, "description": self.describe()}


@dataclass
class EvalSettings:
    split: str
    samples: int
    scenarios: int | None
    seed: int
    max_turns: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    thinking: bool
    concurrency: int
    system_prompt: str | None  # the run's own, for the run's tasks (system_prompt_tasks) only
    max_prompt_tokens: int | None
    source: str  # where the defaults came from
    system_prompt_tasks: tuple[str, ...] = ()

    def task_with_prompt(self, task):
        """`task` with the run's system prompt when the run trained on it (else its own prompt)."""
        if self.system_prompt is None or task.name not in self.system_prompt_tasks:
            return task
        return task.with_system_prompt(self.system_prompt)

    def agent_config(self, model: str, args: argparse.Namespace):
        from stateset_agents.rollout.agent import AgentConfig

        return AgentConfig(model_name=model, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           top_p=self.top_p, top_k=self.top_k, trust_remote_code=bool(args.trust_remote_code),
                           max_prompt_tokens=self.max_prompt_tokens,
                           model_kwargs={"chat_template_kwargs": {"thinking": self.thinking},
                                         "dtype": args.dtype, "device": args.device})

    def describe(self) -> str:
        scenarios = "all" if self.scenarios is None else str(self.scenarios)
        return (f"settings ({self.source}): split {self.split}, {scenarios} scenarios x {self.samples} samples, "
                f"seed {self.seed}, max_turns {self.max_turns}, max_new_tokens {self.max_new_tokens}, temperature "
                f"{self.temperature:g}, top_p {self.top_p:g}, top_k {self.top_k}, thinking "
                f"{'on' if self.thinking else 'off'}")


def default_settings(model: str, weights: WeightsSource | None) -> tuple[Any, str]:
    """The run's TrainingConfig when the weights come from a run that saved one, else the Kimi preset."""
    from stateset_agents.training.kimi25_config import get_kimi25_config
    from stateset_agents.training.run_dir import CONFIG_FILENAME, saved_run_config

    if weights is not None and weights.run_dir is not None:
        try:
            saved = saved_run_config(weights.run_dir)
        except ValueError as error:  # unreadable config.yaml: say so, fall back to the preset
            raise EvalInputError(f"{weights.run_dir / CONFIG_FILENAME}: {error}") from None
        if saved is not None:
            return saved, f"defaults from {weights.run_dir / CONFIG_FILENAME}; flags override"
    preset = get_kimi25_config(model_name=model, task="customer_service", output_dir="unused")
    return preset.replace(system_prompt=None), f"defaults from the Kimi-K2.5 preset for {model}; flags override"


def settings_from_args(args: argparse.Namespace, weights: WeightsSource | None) -> EvalSettings:
    from stateset_agents.core.formats.kimi import kimi_temperature

    for flag, value in (("--samples", args.samples), ("--scenarios", args.scenarios),
                        ("--max-turns", args.max_turns), ("--max-new-tokens", args.max_new_tokens),
                        ("--concurrency", args.concurrency)):
        if value is not None and value < 1:
            raise EvalInputError(f"{flag} must be at least 1, got {value}")
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise EvalInputError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    base, source = default_settings(args.model, weights)
    thinking = base.thinking if args.thinking is None else args.thinking
    if args.temperature is not None:
        temperature = args.temperature
    elif args.thinking is not None and args.thinking != base.thinking:
        temperature = kimi_temperature(thinking)  # the run's temperature was chosen for its own thinking mode
    else:
        temperature = base.effective_temperature
    return EvalSettings(
        split=args.split, samples=args.samples, scenarios=args.scenarios, seed=args.seed,
        max_turns=args.max_turns or base.max_turns, max_new_tokens=args.max_new_tokens or base.max_new_tokens,
        temperature=float(temperature), top_p=base.top_p, top_k=base.top_k, thinking=thinking,
        concurrency=args.concurrency or base.rollout_concurrency, system_prompt=base.system_prompt,
        max_prompt_tokens=base.max_prompt_tokens, source=source, system_prompt_tasks=tuple(base.task_sequence))


def tasks_from_arg(text: str, settings: EvalSettings) -> list:
    from stateset_agents.tasks.registry import get_task

    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise EvalInputError(f"--task {text!r} has an empty name; give task names separated by commas")
    if len(set(names)) != len(names):
        raise EvalInputError(f"--task {text!r} names a task twice")
    # UnknownTaskError (a ValueError) lists the valid ones
    return [settings.task_with_prompt(get_task(name)) for name in names]


def against_candidate(other: str, model: str, ignore_mismatch: bool) -> Candidate:
    """`--against OTHER`: an adapter/run/checkpoint on `model` when OTHER is one, else another model."""
    path = Path(other).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        weights = resolve_weights(other)
        if not ignore_mismatch:
            check_base_model(weights, model)
        return Candidate("against", model, weights)
    if path.is_dir() and (path / "checkpoints").is_dir():  # a run directory that also holds a config.json
        return Candidate("against", model, resolve_weights(other))
    from stateset_agents.models.loading import ModelNotAvailableError, resolve_model_path

    try:  # before anything runs (an embedded name is built here if it has not been)
        resolve_model_path(other)
    except ModelNotAvailableError as error:
        raise EvalInputError(f"--against {other}: not an adapter, run or checkpoint directory, and not a model "
                             f"that can be loaded: {error}") from None
    return Candidate("against", other)


# ----------------------------------------------------------------------------- running


def episode_seed(seed: int, scenario_index: int, sample: int) -> int:
    """Episode (scenario i, sample k)'s seed: the formula of `training.evaluation.evaluate`."""
    return (seed * 1_000_003 + scenario_index) * 1_000_003 + sample


class PolicyLoader:
    """Loads each base model once and puts each candidate's weights on it in turn.

    Adapters on the same base share one `PeftModel` (one named adapter each, `set_adapter` switches);
    the base model alone runs under `disable_adapter()`; a full fine-tune's weights are loaded into a
    fresh copy of the base, which is reloaded afterwards.
    """

    def __init__(self, args: argparse.Namespace, settings: EvalSettings, log: Callable[[str], None]):
        self.args, self.settings, self.log = args, settings, log
        self.loaded = None
        self.base = None
        self.peft = None
        self.model_name: str | None = None
        self.dirty = False

    def _load(self, model: str) -> None:
        from stateset_agents.models.loading import LoadSettings, load_model

        self.loaded = self.base = self.peft = None  # let the previous model go first
        started = time.perf_counter()
        self.loaded = load_model(model, LoadSettings(dtype=self.args.dtype, device=self.args.device,
                                                     trust_remote_code=bool(self.args.trust_remote_code)))
        self.base, self.model_name, self.dirty = self.loaded.model, model, False
        self.base.eval()
        self.log(f"loaded {model} from {self.loaded.path} in {time.perf_counter() - started:.1f} s")

    def _add_adapter(self, candidate: Candidate) -> None:
        from peft import PeftModel

        weights = candidate.weights
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(weights.path), adapter_name=candidate.label,
                                                      is_trainable=False)
            else:
                if candidate.label in self.peft.peft_config:
                    self.peft.delete_adapter(candidate.label)
                self.peft.load_adapter(str(weights.path), adapter_name=candidate.label, is_trainable=False)
            self.peft.set_adapter(candidate.label)
        except (ValueError, RuntimeError, KeyError, TypeError) as error:
            lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
            reason = next((line for line in lines if "size mismatch" in line or "not found" in line), lines[0])
            raise EvalInputError(f"adapter {weights.given} does not fit model {candidate.model} (another base "
                                 f"model or LoRA layout?): {reason[:300]}") from None
        self.peft.eval()

    @contextmanager
    def activate(self, candidate: Candidate) -> Iterator[Any]:
        """An `Agent` sampling with `candidate`'s weights, for the duration of the block."""
        from stateset_agents.rollout.agent import Agent
        from stateset_agents.runs.checkpoints import load_model_weights

        full = candidate.weights is not None and candidate.weights.kind == "full"
        if self.loaded is None or self.model_name != candidate.model or self.dirty or (full and self.peft is not None):
            self._load(candidate.model)
        context = nullcontext()
        if candidate.weights is None:
            model = self.peft if self.peft is not None else self.base
            if self.peft is not None:
                context = self.peft.disable_adapter()
        elif full:
            try:
                load_model_weights(self.base, candidate.weights.path)
            except (ValueError, FileNotFoundError, RuntimeError) as error:
                raise EvalInputError(f"checkpoint {candidate.weights.given} does not fit model {candidate.model}: "
                                     f"{error}") from None
            self.dirty = True
            model = self.base
        else:
            self._add_adapter(candidate)
            model = self.peft
        self.loaded.model = model
        with context:
            yield Agent(self.settings.agent_config(candidate.model, self.args), loaded=self.loaded)


def sample_digest(trajectory) -> str:
    digest = hashlib.sha256()
    for turn in trajectory.turns:
        digest.update(",".join(map(str, turn.completion_ids)).encode() + b";")
    return digest.hexdigest()[:16]


def run_task(agent, task, scenarios: list[dict], settings: EvalSettings) -> list[dict[str, Any]]:
    """One record per episode (scenario-major, sample-minor), as `evaluate` runs and seeds them."""
    from stateset_agents.rewards.batch_rewards import score_trajectories_sync
    from stateset_agents.rollout.runner import EpisodeSpec, run_episodes
    from stateset_agents.training.evaluation import is_success, isolated_rng

    specs = [EpisodeSpec(task, scenario, group_id=i, seed=episode_seed(settings.seed, i, k))
             for i, scenario in enumerate(scenarios) for k in range(settings.samples)]
    with isolated_rng(settings.seed):
        trajectories, _ = run_episodes(agent, specs, max_turns=settings.max_turns, concurrency=settings.concurrency)
    results = score_trajectories_sync(task.default_reward(), trajectories, error_policy="skip")
    records = []
    for index, (spec, trajectory, result) in enumerate(zip(specs, trajectories, results)):
        records.append({
            "scenario_id": str(spec.scenario.get("id", spec.group_id)), "sample": index % settings.samples,
            "seed": spec.seed, "scored": result is not None,
            "reward": None if result is None else float(result.total),
            "success": is_success(trajectory), "turns": trajectory.num_turns, "end_reason": trajectory.end_reason,
            "cut_off_turns": trajectory.num_cut_off_turns,
            "components": {} if result is None else {k: float(v) for k, v in sorted(result.components.items())},
            "sample_sha256": sample_digest(trajectory),
        })
    return records


def metric_values(record: dict[str, Any], components: list[str]) -> dict[str, float]:
    values = {"reward": record["reward"], "success_rate": float(record["success"])}
    values.update({f"component/{name}": record["components"].get(name, 0.0) for name in components})
    return values


def summarize_records(records: list[dict[str, Any]], components: list[str]) -> dict[str, Any]:
    """Per metric: mean of scenario means and its t interval."""
    by_scenario: dict[str, list[dict[str, float]]] = {}
    for record in records:
        if record["scored"]:
            by_scenario.setdefault(record["scenario_id"], []).append(metric_values(record, components))
    metrics = {}
    for name in ["reward", "success_rate", *(f"component/{c}" for c in components)]:
        means = [statistics.fmean(values[name] for values in group) for group in by_scenario.values()]
        in_unit = name != "reward" and all(0.0 <= m <= 1.0 for m in means)  # success, built-in components
        metrics[name] = t_interval(means, bounds=(0.0, 1.0) if in_unit else None)
    scored = [r for r in records if r["scored"]]
    turns = sum(r["turns"] for r in scored)
    return {"metrics": metrics, "episodes": len(records), "scored": len(scored),
            "skipped": len(records) - len(scored),
            # turns cut off at max_new_tokens (no end-of-turn token), of the scored episodes' turns
            "cut_off_turns": sum(r["cut_off_turns"] for r in scored) / turns if turns else 0.0}


def paired_difference(first: list[dict[str, Any]], second: list[dict[str, Any]], components: list[str]) -> dict[str, Any]:
    """first - second, paired by (scenario, sample); t interval over per-scenario mean differences."""
    by_scenario: dict[str, list[dict[str, float]]] = {}
    pairs = 0
    for a, b in zip(first, second):
        assert (a["scenario_id"], a["sample"], a["seed"]) == (b["scenario_id"], b["sample"], b["seed"])
        if a["scored"] and b["scored"]:
            va, vb = metric_values(a, components), metric_values(b, components)
            by_scenario.setdefault(a["scenario_id"], []).append({k: va[k] - vb[k] for k in va})
            pairs += 1
    metrics = {}
    for name in ["reward", "success_rate", *(f"component/{c}" for c in components)]:
        means = [statistics.fmean(d[name] for d in group) for group in by_scenario.values()]
        metrics[name] = t_interval(means)
    return {"metrics": metrics, "pairs": pairs}


# ----------------------------------------------------------------------------- output


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt_ci(stats: dict[str, Any]) -> str:
    if stats["ci_low"] is None:
        return "n/a"
    return f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def render_tables(report: dict[str, Any], console) -> None:
    from rich.table import Table

    labels = list(report["policies"])
    settings = report["settings"]
    for task_name, task_report in report["tasks"].items():
        title = (f"{task_name}: {settings['split']} split, {len(task_report['scenario_ids'])} scenarios x "
                 f"{settings['samples']} samples, seed {settings['seed']}")
        console.print(title, style="bold", markup=False)
        table = Table()
        table.add_column("metric")
        for label in labels:
            table.add_column(label, justify="right")
            table.add_column("95% CI", justify="right")
        if "difference" in task_report:
            table.add_column(f"{labels[0]} - {labels[1]}", justify="right")
            table.add_column("95% CI", justify="right")
        for name in task_report[labels[0]]["metrics"]:
            row = [name.replace("component/", "  ").replace("success_rate", "success rate")]
            for label in labels:
                stats = task_report[label]["metrics"][name]
                row += [_fmt(stats["mean"]), _fmt_ci(stats)]
            if "difference" in task_report:
                stats = task_report["difference"]["metrics"][name]
                row += [_fmt(stats["mean"]), _fmt_ci(stats)]
            table.add_row(*row)
        console.print(table)
        skipped = {label: task_report[label]["skipped"] for label in labels if task_report[label]["skipped"]}
        if skipped:
            console.print(f"  episodes whose reward failed (skipped): {skipped}", markup=False)
        cut_off = {label: f"{task_report[label]['cut_off_turns']:.1%}" for label in labels
                   if task_report[label]["cut_off_turns"]}
        if cut_off:
            console.print(f"  turns cut off at --max-new-tokens {settings['max_new_tokens']} before their "
                          f"end: {cut_off}", markup=False)
    console.print(f"95% intervals: {INTERVAL_METHOD}.", markup=False)


def make_console():
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=140)


# ----------------------------------------------------------------------------- command


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="base model: embedded name (tiny-kimi-k2.5), local directory or hub id")
    parser.add_argument("--adapter", default=None,
                        help="a PEFT adapter directory, a training run directory (its latest checkpoint) or a "
                             "checkpoint directory; none: the base model")
    parser.add_argument("--task", default="customer_service", help="task name, or a comma-separated list")
    parser.add_argument("--split", choices=["eval", "train"], default="eval", help="scenario split (default eval)")
    parser.add_argument("--samples", type=int, default=1, help="episodes per scenario (default 1)")
    parser.add_argument("--scenarios", type=int, default=None, help="the first N scenarios of the split (default all)")
    parser.add_argument("--seed", type=int, default=1234, help="fixes every episode's sampling (default 1234)")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write the full report as JSON")
    parser.add_argument("--against", default=None, metavar="OTHER",
                        help="a second policy on the same scenarios and seeds: an adapter/run/checkpoint on --model, "
                             "or another model (pass --model itself for the base model without adapter)")
    parser.add_argument("--max-turns", type=int, default=None, help="assistant turns per episode")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens sampled per assistant turn")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    parser.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None, help="Kimi thinking mode")
    parser.add_argument("--concurrency", type=int, default=None, help="episodes generated together (batched)")
    parser.add_argument("--vllm-url", default=None, metavar="URL",
                        help="sample the policy on a running vLLM server (serving --model with --adapter merged, e.g. "
                             "`stateset-agents export RUN --merge` then `serve --run`); prompts with images stay on "
                             "transformers. --against still runs here")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the checkpoint")
    parser.add_argument("--ignore-base-mismatch", action="store_true",
                        help="load an adapter whose adapter_config.json names another base model")


def sample_on_vllm(agent, url: str, settings: EvalSettings, log: Callable[[str], None]) -> None:
    """Make `agent` sample text prompts on the vLLM server at `url` (token ids in and out, each episode's
    seed sent along; rollout/vllm_client.py), after checking the server tokenises as the model does."""
    from stateset_agents.rollout.vllm_client import VLLMClientError, VLLMGenerator
    from stateset_agents.rollout.vllm_engine import TextOnVLLM

    client = VLLMGenerator(url, stop_token_ids=agent.stop_token_ids, concurrency=settings.concurrency)
    try:
        client.check_server(agent.tokenizer)
    except VLLMClientError as error:
        raise EvalInputError(str(error)) from None
    agent.use_backend(TextOnVLLM(client, agent.generator))
    log(f"policy samples on vLLM at {url} (model {client.model!r}, max_model_len {client.max_model_len})")


def plan_candidates(args: argparse.Namespace) -> list[Candidate]:
    weights = resolve_weights(args.adapter) if args.adapter is not None else None
    if weights is not None and not args.ignore_base_mismatch:
        check_base_model(weights, args.model)
    candidates = [Candidate("policy", args.model, weights)]
    if args.against is not None:
        candidates.append(against_candidate(args.against, args.model, args.ignore_base_mismatch))
    return candidates


def check_json_path(path: str | None) -> None:
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise EvalInputError(f"--json {path} is a directory; give a file name such as {target / 'eval.json'}")
    if not target.parent.is_dir():
        raise EvalInputError(f"--json {path}: directory {target.parent} does not exist")


def build_report(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Validate the inputs (EvalInputError, UnknownTaskError), run every candidate on every task, and
    return the report (JSON-serialisable, deterministic for a given --seed)."""
    candidates = plan_candidates(args)
    settings = settings_from_args(args, candidates[0].weights)
    tasks = tasks_from_arg(args.task, settings)
    check_json_path(args.json)
    chosen = {}
    for task in tasks:
        scenarios = task.scenarios(settings.split)
        if settings.scenarios is not None and settings.scenarios > len(scenarios):
            log(f"note: {task.name} has {len(scenarios)} {settings.split} scenarios; using all of them")
        chosen[task.name] = scenarios[: settings.scenarios]
    for candidate in candidates:
        log(f"{candidate.label}: {candidate.describe()}")
    log(settings.describe())
    from stateset_agents.commands.cpu_load import warn_if_cpu_busy

    warn_if_cpu_busy(args.device, log)
    loader = PolicyLoader(args, settings, log)
    episodes: dict[str, dict[str, list[dict[str, Any]]]] = {c.label: {} for c in candidates}
    for candidate in candidates:
        with loader.activate(candidate) as agent:
            if candidate.label == "policy" and getattr(args, "vllm_url", None):
                sample_on_vllm(agent, args.vllm_url, settings, log)
            for task in tasks:
                started = time.perf_counter()
                episodes[candidate.label][task.name] = run_task(agent, task, chosen[task.name], settings)
                log(f"{candidate.label} / {task.name}: {len(episodes[candidate.label][task.name])} episodes in "
                    f"{time.perf_counter() - started:.1f} s")
    report: dict[str, Any] = {
        "interval": {"level": LEVEL, "method": INTERVAL_METHOD},
        "settings": {key: value for key, value in asdict(settings).items()
                     if key not in ("system_prompt", "system_prompt_tasks")},
        "policies": {c.label: c.to_json() for c in candidates},
        "tasks": {},
    }
    for task in tasks:
        runs = {label: episodes[label][task.name] for label in episodes}
        components = sorted({name for records in runs.values() for r in records for name in r["components"]})
        task_report: dict[str, Any] = {"scenario_ids": [str(s.get("id")) for s in chosen[task.name]]}
        for label, records in runs.items():
            task_report[label] = summarize_records(records, components)
        if len(candidates) == 2:
            task_report["difference"] = {"of": "policy - against",
                                         **paired_difference(runs["policy"], runs["against"], components)}
        task_report["episodes"] = [
            {"scenario_id": r["scenario_id"], "sample": r["sample"], "seed": r["seed"],
             **{label: {k: v for k, v in runs[label][i].items() if k not in ("scenario_id", "sample", "seed")}
                for label in runs}}
            for i, r in enumerate(runs["policy"])]
        report["tasks"][task.name] = task_report
    return report


def eval_from_args(args: argparse.Namespace) -> int:
    """`stateset-agents eval`: every bad input is one `error:` line and exit status 2."""
    from stateset_agents.cli import fail
    from stateset_agents.models.loading import ModelNotAvailableError, UnsupportedSettingError
    from stateset_agents.tasks.registry import UnknownTaskError

    console = make_console()
    log = lambda line: console.print(line, markup=False, highlight=False)  # noqa: E731
    try:
        report = build_report(args, log)
    except (EvalInputError, UnknownTaskError, ModelNotAvailableError, UnsupportedSettingError) as error:
        return fail(str(error))
    render_tables(report, console)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        log(f"wrote {args.json}")
    return 0
