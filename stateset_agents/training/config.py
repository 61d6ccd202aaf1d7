"""`TrainingConfig`: every option of a GSPO/GRPO run, typed, bounded and documented in one place.

The config is written next to every run's outputs (`save(output_dir)` -> `config.yaml`) and can
be loaded back (`from_file`). Unknown keys are errors (with a "did you mean" hint), and so are
combinations that cannot work; each error says what to change.

Batch geometry (one outer iteration):

    episodes per rollout = scenarios_per_iteration * num_generations
                         = minibatches_per_rollout * per_device_train_batch_size * gradient_accumulation_steps

The rollout batch is split into `minibatches_per_rollout` minibatches of whole episodes, one
optimizer step each; each step accumulates `gradient_accumulation_steps` micro-batches of
`per_device_train_batch_size` episodes. With more than one step per rollout, pi_old != pi_theta
after the first step, so the GSPO ratio and its clipping actually act (DESIGN.md invariant 4;
TRL's `steps_per_generation`).
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stateset_agents.core.formats.kimi import kimi_temperature

__all__ = ["TrainingConfig", "CONTINUAL_STRATEGIES", "REMOVED_FIELDS", "describe_validation_error"]

CONTINUAL_STRATEGIES = ("none", "replay", "lwf", "replay_lwf")
DEFAULT_MODEL = "tiny-kimi-k2.5"
_MISSING = object()


class TrainingConfig(BaseModel):
    """All settings of a training run. Defaults suit the embedded tiny Kimi-K2.5 on CPU."""

    # allow_inf_nan=False: `lora_alpha: .inf` or `kl_beta: .nan` in a YAML file would otherwise be accepted
    # and silently train nothing (or NaN)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    # --- run -----------------------------------------------------------------------------------
    model_name: str = Field(DEFAULT_MODEL, min_length=1, description=(
        "Model to fine-tune: an embedded name (tiny-kimi-k2.5), a local directory or a hub id "
        "(moonshotai/Kimi-K2.5)."))
    output_dir: str = Field("./outputs/gspo", min_length=1, description=(
        "Directory for config.yaml, metrics.jsonl, checkpoints and the report."))
    seed: int = Field(0, ge=0, description="Seed for scenario sampling, sampling and minibatch order.")
    task: str = Field("customer_service", description=(
        "Task name, or several separated by commas (or a list) to train on them in sequence "
        "(continual learning): customer_service, technical_support, sales, customer_service_claims, "
        "customer_service_partner, a registered task, a built-in sequence (continual_two_stores = "
        "customer_service,customer_service_claims; continual_two_sellers = customer_service,customer_service_partner), "
        "or the path "
        "of a file domain (examples/domains/telecom_billing; docs/domains.md), kept as given and resolved "
        "against the working directory when the run (or its resume) loads it."))
    resume: bool = Field(False, description="Continue from the latest complete checkpoint in output_dir.")

    # --- model and LoRA --------------------------------------------------------------------------
    use_lora: bool = Field(True, description=(
        "Train LoRA adapters (the reference policy is then the same model with the adapter disabled). "
        "False = full fine-tuning."))
    lora_r: int = Field(8, ge=1, le=1024, description="LoRA rank r.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: the update is (alpha / r) * B A.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "Dropout on the LoRA input. Must be 0 when routed experts are adapted (PEFT target_parameters)."))
    lora_target_modules: list[str] | None = Field(None, description=(
        "Module names to adapt, Llama-style (q_proj, k_proj, ..., down_proj) or the model's own; translated "
        "to what the model has (MLA projections and experts on Kimi-K2.5, see models/lora_targets.py). "
        "None = auto: every attention and MLP projection of the language model, routed experts included."))
    lora_target_experts: bool = Field(True, description=(
        "Also adapt fused routed-expert weights (MoE models; via PEFT target_parameters). Large: on "
        "Kimi-K2.5 at r=64 this is ~30B trainable parameters."))
    use_4bit: bool = Field(False, description="Load the base weights in 4-bit (QLoRA, bitsandbytes, CUDA only).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "Weight dtype; auto = bfloat16 on GPU, float32 on CPU."))
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description=(
        "auto, cpu, cuda, cuda:N or mps; auto = cuda when available."))
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(None, description=(
        "Attention kernel passed to transformers; None = its default."))
    trust_remote_code: bool = Field(False, description=(
        "Run model/tokenizer code shipped with the checkpoint (the hub Kimi-K2.5 tokenizer needs it)."))

    # --- batch geometry --------------------------------------------------------------------------
    per_device_train_batch_size: int = Field(4, ge=1, description="Episodes per forward/backward micro-batch.")
    gradient_accumulation_steps: int = Field(2, ge=1, description="Micro-batches accumulated per optimizer step.")
    num_generations: int = Field(4, description=(
        "Group size G: episodes sampled per scenario; advantages compare rewards within a group (>= 2)."))
    scenarios_per_iteration: int = Field(4, ge=1, description="Scenarios (groups) rolled out per outer iteration.")
    num_outer_iterations: int = Field(10, ge=1, description="Outer iterations: rollout, reward, K optimizer steps.")
    task_iterations: list[int] | None = Field(None, description=(
        "Outer iterations on each task of a task sequence, in order (they sum to num_outer_iterations); "
        "None = the tasks share the iterations equally."))
    minibatches_per_rollout: int | None = Field(None, ge=1, description=(
        "K, optimizer steps per rollout batch (TRL's steps_per_generation). None = episodes per rollout / "
        "(per_device_train_batch_size * gradient_accumulation_steps). K >= 2 lets the GSPO ratio move."))

    # --- optimizer -------------------------------------------------------------------------------
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="Peak AdamW learning rate.")
    lr_warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear warmup from 0.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("constant", description=(
        "Learning-rate decay after warmup (linear/cosine decay to 0 at the last step)."))
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1.")
    adam_beta2: float = Field(0.99, ge=0.0, lt=1.0, description="AdamW beta2.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient norm clipping threshold.")

    # --- loss ------------------------------------------------------------------------------------
    loss_type: Literal["gspo", "grpo", "gspo_token"] = Field("gspo", description=(
        "gspo: sequence-level ratio (Zheng et al. 2025, arXiv:2507.18071); gspo_token: GSPO-token; "
        "grpo: token-level ratio (DeepSeekMath). See training/losses.py."))
    clip_epsilon_low: float = Field(3e-4, ge=0.0, lt=1.0, description=(
        "Ratio clipped below at 1 - eps_low. GSPO's sequence ratio needs a range ~1e-4, GRPO's ~0.2."))
    clip_epsilon_high: float = Field(4e-4, ge=0.0, description="Ratio clipped above at 1 + eps_high.")
    kl_beta: float = Field(0.0, ge=0.0, description=(
        "Coefficient of the k3 KL to the reference policy (the base model: LoRA disabled); 0 = off."))
    advantage_normalization: Literal["group_std", "group_mean_only"] = Field("group_std", description=(
        "group_std: (r - group mean) / group std; group_mean_only: r - group mean."))

    # --- rollouts --------------------------------------------------------------------------------
    max_turns: int = Field(4, ge=1, description="Assistant turns per episode before it is cut off.")
    max_new_tokens: int = Field(64, ge=1, description="Most tokens sampled per assistant turn.")
    temperature: float | None = Field(None, ge=0.0, description=(
        "Sampling temperature; None = Kimi's advice (1.0 with thinking, 0.6 without)."))
    top_p: float = Field(1.0, gt=0.0, le=1.0, description=(
        "Nucleus sampling; 1.0 = off. Below 1 the sampler's distribution is truncated (see rollout docs)."))
    top_k: int = Field(0, ge=0, description="Top-k sampling; 0 = off.")
    thinking: bool = Field(True, description="Kimi thinking mode (chat_template_kwargs={'thinking': ...}).")
    system_prompt: str | None = Field(None, description=(
        "System prompt of every training and evaluation episode, replacing the task's own; None = each "
        "task's own prompt (which states its tools and policies)."))
    max_prompt_tokens: int | None = Field(None, ge=1, description=(
        "Most tokens an episode's prompt (the conversation so far) may hold before a turn is sampled; an "
        "episode that would exceed it ends with end reason context_limit. None = the model's maximum length "
        "(max_position_embeddings) minus max_new_tokens."))
    rollout_concurrency: int = Field(8, ge=1, description="Episodes generated concurrently (batched).")
    use_vllm: bool = Field(False, description=(
        "Generate rollouts with vLLM (rollout/vllm_engine.py) instead of transformers.generate: token ids in "
        "and out, π_old recomputed by the trainer, a truncated importance weight for the sampler mismatch."))
    vllm_base_url: str | list[str] | None = Field(None, description=(
        "Running vLLM server(s) for rollouts, e.g. http://localhost:8000 (requests spread over a list). None with "
        "use_vllm: the trainer starts and stops its own server on loopback (needs `make vllm-env`)."))
    vllm_sync: Literal["auto", "reload", "lora", "none"] = Field("auto", description=(
        "How the server gets each update: reload (merged weights reloaded in place; the managed server), lora "
        "(the adapter loaded at runtime under a new name per version; external GPU servers started with "
        "--enable-lora), none (never: samples go stale and are counted). auto: reload when managed, else lora."))
    vllm_max_model_len: int = Field(4096, ge=64, description="Context length of the managed vLLM server.")
    recompute_old_logprobs: bool | None = Field(None, description=(
        "Score π_old with the trainer's own forward before the update instead of using the sampler's "
        "log-probs. None = on with vLLM (its kernels differ from the trainer's), off with transformers (the "
        "sampler is the trainer: exact, tests/test_generation_exactness.py)."))
    importance_weight_cap: float = Field(2.0, gt=0, description=(
        "C of the truncated importance weight min(π_old/μ, C) applied when the sampler is another engine "
        "(Yao et al. 2025, 'Your efficient RL framework secretly brings you off-policy RL training'; verl's "
        "TIS). Caps the variance that rare large ratios would add; 2 is verl's default."))

    # --- the simulated customer, the LLM judge, a custom reward (docs/llm_user_and_judge.md) ------
    user_simulator: Literal["rule", "llm"] = Field("rule", description=(
        "Who plays the customer: rule (the scripted RuleBasedUser) or llm (a chat model briefed with the "
        "scenario, envs/llm_user.py), in training rollouts and evaluation."))
    user_model_url: str | None = Field(None, description=(
        "OpenAI-compatible server of the LLM customer (/v1/chat/completions: vLLM, SGLang, a hosted API), e.g. "
        "http://127.0.0.1:8001. None: run user_model in this process with transformers."))
    user_model: str | None = Field(None, description=(
        "The LLM customer's model: the name sent to user_model_url (None: the server's first model), or without "
        "a URL a local model (embedded name, directory or hub id) run in-process."))
    user_temperature: float = Field(0.7, ge=0.0, description=(
        "Sampling temperature of the LLM customer; each reply is seeded by its episode, so reruns repeat."))
    user_max_tokens: int = Field(128, ge=1, description="Most tokens of one LLM customer reply.")
    judge_model_url: str | None = Field(None, description=(
        "OpenAI-compatible server of the LLM judge (rewards/llm_judge.py). None: run judge_model in this process."))
    judge_model: str | None = Field(None, description=(
        "The judge's model: the name sent to judge_model_url (None: the server's first model), or without a URL "
        "a local model run in-process."))
    judge_rubric: str | list[str | dict[str, Any]] | None = Field(None, description=(
        "The judge's criteria: a list of 'name: description' (or {name, description, weight}), or a YAML file "
        "of them; None = resolution, policy, communication. Each is scored 0-10."))
    judge_mode: Literal["pointwise", "group"] = Field("pointwise", description=(
        "pointwise: one judge call per episode; group: one call per group, the episodes compared side by side "
        "(as ART's RULER)."))
    judge_weight: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "Share of the reward that comes from the judge, added as a component of the task's reward (the other "
        "weights keep their ratios); 0 = no judge."))
    judge_temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of the judge (0: greedy).")
    judge_max_tokens: int = Field(512, ge=1, description="Most tokens of one judge answer.")
    llm_concurrency: int = Field(8, ge=1, description="Requests in flight at once to each LLM endpoint.")
    llm_max_retries: int = Field(3, ge=0, description=(
        "Retries of an LLM request that failed in a way that may pass (connection, timeout, HTTP 429/5xx); after "
        "them the episode is dropped (customer) or the judge skipped, logged and counted, never a crash."))
    llm_retry_backoff: float = Field(0.5, ge=0.0, description="Seconds before the first retry, doubling each time.")
    llm_timeout: float = Field(120.0, gt=0.0, description="Seconds to wait for one LLM answer.")
    reward: str | None = Field(None, description=(
        "Your own reward as 'module:Name' (or 'path/to/file.py:Name'): a class, instantiated with no arguments "
        "or with the task, or a function trajectory -> reward. None = the task's default reward."))

    # --- continual learning ----------------------------------------------------------------------
    continual_strategy: Literal["none", "replay", "lwf", "replay_lwf"] = Field("none", description=(
        "Keeping earlier tasks while training later ones: replay (mix stored episodes of earlier "
        "tasks into each batch), lwf (learning without forgetting: KL to the previous task's frozen "
        "adapter), replay_lwf (both), none."))
    replay_buffer_size: int = Field(1000, ge=1, description="Most episodes kept in the replay buffer.")
    replay_ratio: float = Field(0.25, ge=0.0, lt=1.0, description="Fraction of each batch drawn from the replay buffer.")
    kl_penalty_beta: float = Field(0.1, ge=0.0, description=(
        "LwF coefficient: KL(pi_theta || previous-task policy) per sampled token (the other direction with "
        "lwf_divergence='forward')."))
    lwf_rows: Literal["all", "replayed"] = Field("all", description=(
        "Where the LwF KL applies: every row of the update (all), or only the replayed episodes of earlier "
        "tasks (replayed; with replay_lwf), so it does not hold the new task's own episodes to the old policy."))
    lwf_divergence: Literal["reverse", "forward"] = Field("reverse", description=(
        "Which KL the LwF term estimates on the sampled tokens: reverse = KL(pi_theta || teacher) (tokens sampled "
        "from pi_theta: the fresh episodes), forward = KL(teacher || pi_theta) (tokens sampled from the teacher's "
        "side: replayed episodes, as distillation and CLEAR's behaviour cloning do; its gradient stays bounded "
        "where the policy has made a teacher token unlikely)."))

    # --- evaluation, checkpoints, logging --------------------------------------------------------
    eval_every: int = Field(5, ge=0, description="Evaluate every N outer iterations; 0 = never.")
    eval_scenarios: int = Field(8, ge=1, description="Held-out scenarios per evaluation.")
    save_every: int = Field(5, ge=0, description="Checkpoint every N outer iterations (and at the end); 0 = never.")
    log_every: int = Field(1, ge=1, description="Print a console line every N outer iterations.")
    report_to: list[Literal["console", "jsonl", "wandb"]] = Field(["console", "jsonl"], description=(
        "Metric sinks: console, jsonl (output_dir/metrics.jsonl), wandb."))
    wandb_project: str | None = Field(None, description="W&B project (used when report_to has wandb).")
    wandb_run_name: str | None = Field(None, description="W&B run name; None = W&B's default.")
    reward_error_policy: Literal["fail", "skip"] = Field("fail", description=(
        "When a reward function raises: fail the run, or skip that episode (counted in metrics)."))

    # --- field validators ------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = _drop_removed_defaults(data)
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                raise ValueError("; ".join(_unknown_field_message(key) for key in unknown))
        return data

    @field_validator("task", mode="before")
    @classmethod
    def _task_to_text(cls, value: Any) -> Any:
        value = os.fspath(value) if isinstance(value, os.PathLike) else value  # a domain's Path
        names = value.split(",") if isinstance(value, str) else value
        if isinstance(names, (list, tuple)):
            names = [os.fspath(n) if isinstance(n, os.PathLike) else n for n in names]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ValueError("task must be a name or domain path, comma-separated ones, or a list of them")
        names = [name.strip() for name in names]
        if not names or not all(names):
            raise ValueError(f"task has an empty name: {value!r}")
        return ",".join(names)

    @field_validator("num_generations")
    @classmethod
    def _group_size(cls, value: int) -> int:
        if value < 2:
            raise ValueError(
                f"num_generations={value}: group advantages compare episodes of the same scenario, so a "
                "group needs at least 2 (8 is the Kimi-K2.5 preset)."
            )
        return value

    @field_validator("lora_target_modules")
    @classmethod
    def _targets_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(name.strip() for name in value)):
            raise ValueError("lora_target_modules must be None (auto) or a non-empty list of names")
        return value

    @field_validator("report_to")
    @classmethod
    def _dedupe_sinks(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    # --- cross-field validators ------------------------------------------------------------------
    @model_validator(mode="after")
    def _check_consistency(self) -> TrainingConfig:
        for check in (_check_batch_geometry, _check_clip_range, _check_lora, _check_vllm, _check_task_iterations,
                      _check_continual, _check_llm_user_and_judge):
            check(self)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        """Validated assignment that leaves the config unchanged when the new value is rejected
        (pydantic keeps the rejected value when only a cross-field check fails)."""
        previous, fields_set = self.__dict__.get(name, _MISSING), set(self.model_fields_set)
        try:
            super().__setattr__(name, value)
        except ValidationError:
            if previous is not _MISSING:
                self.__dict__[name] = previous
                object.__setattr__(self, "__pydantic_fields_set__", fields_set)
            raise

    # --- derived values --------------------------------------------------------------------------
    @property
    def effective_batch_size(self) -> int:
        """Episodes per optimizer step: per_device_train_batch_size * gradient_accumulation_steps."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @property
    def episodes_per_rollout(self) -> int:
        """Episodes sampled per outer iteration: scenarios_per_iteration * num_generations."""
        return self.scenarios_per_iteration * self.num_generations

    @property
    def task_sequence(self) -> list[str]:
        """The tasks, in training order (a built-in sequence's name, `tasks.registry.TASK_SEQUENCES`, stands
        for its tasks)."""
        from stateset_agents.tasks.registry import TASK_SEQUENCES

        return [task for name in self.task.split(",") for task in TASK_SEQUENCES.get(name, (name,))]

    @property
    def effective_temperature(self) -> float:
        """The sampling temperature in use (Kimi's advice when `temperature` is None)."""
        if self.temperature is not None:
            return self.temperature
        return kimi_temperature(self.thinking)

    def optimizer_steps_per_rollout(self, episodes: int | None = None) -> int:
        """K, optimizer steps per rollout batch of `episodes` (default: episodes_per_rollout), >= 1."""
        episodes = self.episodes_per_rollout if episodes is None else episodes
        steps = self.minibatches_per_rollout or episodes // self.effective_batch_size
        return max(1, min(steps, episodes))

    # --- files -----------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> TrainingConfig:
        """A validated copy with `changes` applied (all cross-field checks run once, on the result)."""
        return type(self)(**{**self.model_dump(), **changes})

    def to_yaml(self, path: str | Path) -> Path:
        """Write the config as YAML (fields in definition order); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
        return path

    def save(self, output_dir: str | Path | None = None) -> Path:
        """Write `config.yaml` into `output_dir` (default: this config's output_dir)."""
        return self.to_yaml(Path(output_dir if output_dir is not None else self.output_dir) / "config.yaml")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainingConfig:
        try:
            data = yaml.safe_load(_read_config_text(path))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"{path}: YAML syntax error{where}: {problem}") from None
        return cls._from_mapping(data, path)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainingConfig:
        """Load a `.yaml`/`.yml` or `.json` config file."""
        suffix = Path(path).suffix.lower()
        if suffix in (".yaml", ".yml"):
            return cls.from_yaml(path)
        if suffix == ".json":
            try:
                data = json.loads(_read_config_text(path))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: JSON syntax error at line {error.lineno}, column {error.colno}: "
                                 f"{error.msg}") from None
            return cls._from_mapping(data, path)
        raise ValueError(f"config file must end in .yaml, .yml or .json: {path}")

    @classmethod
    def _from_mapping(cls, data: Any, path: str | Path) -> TrainingConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TrainingConfig fields, got {type(data).__name__}")
        return cls(**data)


def _read_config_text(path: str | Path) -> str:
    if not Path(path).is_file():
        raise ValueError(f"config file {path} does not exist (or is not a file)")
    return Path(path).read_text()


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, as `field: message`, without pydantic's boilerplate."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not isinstance(item.get("input"), (dict, list)) and item["type"] != "value_error":
            message += f" (got {item.get('input')!r})"
        problems.append(f"{field}: {message}" if field else message)
    return "; ".join(problems)


# Settings that existed but did nothing: why each is gone, and the value that meant "off" (an
# earlier run's config.yaml holds it; that is accepted with a warning so the run can resume).
REMOVED_FIELDS: dict[str, tuple[str, Any]] = {
    "router_aux_loss_coef": (
        "Kimi-K2.5 (like DeepSeek-V3) routes experts aux-loss-free (topk_method noaux_tc: a per-expert bias "
        "balances the load), so there is no router load-balancing loss to weight; the setting was never read "
        "and has been removed", 0.0),
}


def _removed_field_message(key: str) -> str:
    return f"{key!r} is no longer a TrainingConfig field: {REMOVED_FIELDS[key][0]}. Delete it from the config"


def _drop_removed_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Drop removed fields set to their "off" value, with a warning; other values stay (and fail)."""
    inert = [key for key, (_, off) in REMOVED_FIELDS.items() if key in data and data[key] == off]
    for key in inert:
        warnings.warn(_removed_field_message(key) + " (its value here, off, is ignored).", UserWarning, stacklevel=6)
    return {k: v for k, v in data.items() if k not in inert}


def _unknown_field_message(key: str) -> str:
    if key in REMOVED_FIELDS:
        return _removed_field_message(key) + "."
    close = difflib.get_close_matches(str(key), TrainingConfig.model_fields, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown TrainingConfig field {key!r}{hint}"


def _check_batch_geometry(config: TrainingConfig) -> None:
    episodes, per_step = config.episodes_per_rollout, config.effective_batch_size
    geometry = (
        f"scenarios_per_iteration * num_generations = {config.scenarios_per_iteration} * "
        f"{config.num_generations} = {episodes} episodes per rollout"
    )
    step = (
        f"per_device_train_batch_size * gradient_accumulation_steps = {config.per_device_train_batch_size} * "
        f"{config.gradient_accumulation_steps} = {per_step} episodes per optimizer step"
    )
    steps = config.minibatches_per_rollout
    if steps is not None and steps * per_step != episodes:
        raise ValueError(
            f"{geometry}, but minibatches_per_rollout={steps} steps of {per_step} episodes ({step}) make "
            f"{steps * per_step}; make them equal (or leave minibatches_per_rollout unset to derive it)."
        )
    if steps is None and episodes % per_step:
        raise ValueError(f"{geometry} is not a multiple of {step}; {_geometry_fixes(config)}.")
    if config.optimizer_steps_per_rollout() == 1:
        _warn_single_step(geometry, step)


def _geometry_fixes(config: TrainingConfig) -> str:
    """Concrete values for each of the numbers that can make the rollout a whole number of steps."""
    groups, size = config.scenarios_per_iteration, config.num_generations
    micro, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    per_step = micro * accumulation
    fixes = [f"scenarios_per_iteration={_next_multiple(groups, lambda s: s * size % per_step == 0)}"]
    fixes.append(f"num_generations={_next_multiple(size, lambda g: groups * g % per_step == 0)}")
    episodes = groups * size
    if episodes % micro == 0:
        divisors = [a for a in range(1, episodes // micro + 1) if (episodes // micro) % a == 0]
        best = min(divisors, key=lambda a: (abs(a - accumulation), a))
        fixes.append(f"gradient_accumulation_steps={best}")
    fixes.append(f"or minibatches_per_rollout with a per_device_train_batch_size * gradient_accumulation_steps "
                 f"that divides {episodes}")
    return "for example set " + ", or ".join(fixes[:-1]) + ", " + fixes[-1]


def _next_multiple(start: int, fits: Any) -> int:
    """The smallest value >= start that `fits` (there always is one below start * 1024)."""
    return next(value for value in range(start, start * 1024 + 1) if fits(value))


def _check_clip_range(config: TrainingConfig) -> None:
    if config.clip_epsilon_low == 0 and config.clip_epsilon_high == 0:
        raise ValueError(
            "clip_epsilon_low = clip_epsilon_high = 0: the clipped ratio is always exactly 1, so once the policy "
            "moves every token's gradient is clipped away and later optimizer steps train nothing. Use GSPO's "
            "range (clip_epsilon_low=3e-4, clip_epsilon_high=4e-4) or GRPO's (0.2, 0.2)."
        )


def _warn_single_step(geometry: str, step: str) -> None:
    warnings.warn(
        f"{geometry} and {step}: one optimizer step per rollout, so the policy ratio stays 1 and clipping "
        "never acts. Raise scenarios_per_iteration or lower gradient_accumulation_steps for >= 2 steps.",
        UserWarning,
        stacklevel=4,
    )


def _check_lora(config: TrainingConfig) -> None:
    if config.use_4bit and not config.use_lora:
        raise ValueError("use_4bit=True needs use_lora=True: 4-bit base weights cannot be trained directly (QLoRA).")
    if config.use_lora and config.lora_dropout and config.lora_target_experts:
        raise ValueError(
            f"lora_dropout={config.lora_dropout} with lora_target_experts=True: routed experts are adapted "
            "through PEFT target_parameters, which refuses dropout. Set lora_dropout=0.0, or "
            "lora_target_experts=False (dense models have no routed experts)."
        )


def _check_vllm(config: TrainingConfig) -> None:
    urls = [config.vllm_base_url] if isinstance(config.vllm_base_url, str) else list(config.vllm_base_url or [])
    bad = [url for url in urls if not url.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"vllm_base_url {bad[0]!r} should match pattern '^https?://' (e.g. http://localhost:8000)")
    if config.vllm_base_url is not None and not urls:
        raise ValueError("vllm_base_url is an empty list: give one URL or more, or leave it unset for a managed server")
    if config.vllm_sync == "reload" and urls:
        raise ValueError("vllm_sync='reload' reloads the managed server's weights: leave vllm_base_url unset, or use "
                         "vllm_sync='lora' (runtime adapters on a server started with --enable-lora)")


def _check_task_iterations(config: TrainingConfig) -> None:
    counts = config.task_iterations
    if counts is None:
        return
    tasks = config.task_sequence
    if len(counts) != len(tasks) or min(counts) < 1:
        raise ValueError(f"task_iterations needs one count >= 1 per task of {tasks}, got {counts}")
    if sum(counts) != config.num_outer_iterations:
        raise ValueError(f"task_iterations {counts} sum to {sum(counts)}, num_outer_iterations is "
                         f"{config.num_outer_iterations}: set it to {sum(counts)}")


def _check_continual(config: TrainingConfig) -> None:
    strategy = config.continual_strategy
    if "replay" in strategy and config.replay_ratio <= 0:
        raise ValueError(f"continual_strategy={strategy!r} replays episodes: set replay_ratio in (0, 1).")
    if "lwf" in strategy and config.kl_penalty_beta <= 0:
        raise ValueError(f"continual_strategy={strategy!r} uses LwF: set kl_penalty_beta > 0.")
    if config.lwf_rows == "replayed" and strategy == "lwf":
        raise ValueError("lwf_rows='replayed' applies the LwF KL to replayed episodes, and continual_strategy='lwf' "
                         "replays none: it needs continual_strategy='replay_lwf'.")
    if strategy in ("lwf", "replay_lwf") and not config.use_lora:
        raise ValueError(
            f"continual_strategy={strategy!r} keeps the previous task's policy as a second frozen LoRA "
            "adapter: set use_lora=True."
        )
    if strategy != "none" and len(config.task_sequence) == 1:
        warnings.warn(
            f"continual_strategy={strategy!r} with the single task {config.task!r}: replay and LwF act only at "
            "a task boundary, so this run neither replays nor distils. Give a task sequence, e.g. "
            "task='continual_two_stores' (two stores whose policies conflict) or 'customer_service,sales' "
            "(--task customer_service,sales), to keep earlier tasks while learning later ones.",
            UserWarning,
            stacklevel=4,
        )


def _check_llm_user_and_judge(config: TrainingConfig) -> None:
    import re

    from stateset_agents.rewards.custom_reward import REWARD_SPEC_PATTERN

    if config.reward is not None and not re.match(REWARD_SPEC_PATTERN, config.reward):
        raise ValueError(f"reward {config.reward!r} must read 'module:Name' (e.g. my_rewards:KimiReward or "
                         "path/to/rewards.py:KimiReward)")
    for field in ("user_model_url", "judge_model_url"):
        url = getattr(config, field)
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{field} {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8001)")
    if config.user_simulator == "llm" and not (config.user_model_url or config.user_model):
        raise ValueError("user_simulator='llm' needs user_model_url (an OpenAI-compatible server) or user_model (a "
                         "local model run in-process, e.g. tiny-kimi-k2.5)")
    if config.judge_weight > 0 and not (config.judge_model_url or config.judge_model):
        raise ValueError(f"judge_weight={config.judge_weight} needs judge_model_url (an OpenAI-compatible server) or "
                         "judge_model (a local model run in-process)")
    judge_set = [f for f in ("judge_model_url", "judge_model", "judge_rubric") if getattr(config, f) is not None]
    if judge_set and config.judge_weight == 0:
        raise ValueError(f"{', '.join(judge_set)} set but judge_weight is 0: the judge would never be asked. Set "
                         "judge_weight (its share of the reward, e.g. 0.3), or unset the judge settings")
