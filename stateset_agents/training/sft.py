"""Supervised fine-tuning on transcript files: the warm start before RL, for any model.

    run_sft(SFTSettings(model="tiny-kimi-k2.5-base", data="transcripts.jsonl", output_dir="outputs/sft"))

Data: `training.sft_data` (one example per assistant turn, exactly the tokens the sampler would
generate for it; loss on those only). Training: TRL's `SFTTrainer` on the pre-tokenized rows
(`input_ids` + `completion_mask`, `completion_only_loss=True`), LoRA by default on the targets
`models.lora_targets` resolves (the same as RL's), or every weight with `use_lora=False`.

Output directory:

    checkpoints/checkpoint-N/   Trainer checkpoints every `save_steps` (`resume=True` continues the last)
    model/                      the model with the adapter folded in, tokenizer (and Kimi's image
                                settings): what `--model` of `stateset-agents train` loads
    adapter/                    the LoRA adapter alone (LoRA runs)
    sft_settings.json           the settings (a resumed run must use the same)
    sft_summary.json            data counts, logged losses, steps, seconds

Simplifications: text-only transcripts; turns longer than `max_length` are skipped (reported), not
truncated; transformers' Trainer aligns the model's special-token ids with the tokenizer's during
training, and the saved model gets back the ones it was loaded with.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from stateset_agents.training.sft_data import TurnExample, build_examples, read_transcripts

SETTINGS_FILE, SUMMARY_FILE = "sft_settings.json", "sft_summary.json"
CHECKPOINTS, MODEL, ADAPTER = "checkpoints", "model", "adapter"
# settings that may differ between a run and its --resume
RESUME_MAY_CHANGE = ("resume", "report_to")


class SFTRunError(ValueError):
    """The run cannot start as asked (the message says what to change)."""


@dataclass(frozen=True)
class SFTSettings:
    """One supervised fine-tuning run. Learning rate None: 2e-4 with LoRA, 2e-5 without."""

    model: str
    data: str
    output_dir: str
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_target_modules: list[str] | None = None  # None: every attention and MLP projection (models.lora_targets)
    lora_target_experts: bool = True  # routed experts of MoE models too (large on Kimi-K2.5: see `plan`)
    epochs: float = 1.0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    warmup: float = 0.03  # fraction of the steps (< 1) or a number of steps
    lr_scheduler: str = "cosine"
    max_length: int = 8192  # longer turns (prompt + target tokens) are skipped
    thinking: bool = True  # Kimi thinking mode, as the RL run will sample
    save_steps: int = 100
    save_total_limit: int | None = 3
    logging_steps: int = 10
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    report_to: list[str] = field(default_factory=list)  # e.g. ["wandb"]
    resume: bool = False

    def __post_init__(self):
        positive = {"lora_r": self.lora_r, "batch_size": self.batch_size, "save_steps": self.save_steps,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "max_length": self.max_length, "logging_steps": self.logging_steps}
        for name, value in positive.items():
            if value < 1:
                raise SFTRunError(f"{name} must be at least 1, got {value}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise SFTRunError("set epochs > 0 or max_steps > 0")
        if self.learning_rate is not None and not 0 < self.learning_rate <= 1:
            raise SFTRunError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.warmup < 0:
            raise SFTRunError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.use_lora else 2e-5)


@dataclass
class SFTResult:
    output_dir: Path
    model_dir: Path
    adapter_dir: Path | None
    global_step: int
    losses: list[float]  # the Trainer's logged training losses, in order
    task: str | None = None  # the task every transcript's metadata names, when they agree


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest Trainer checkpoint of a run (None when there is none)."""
    directory = Path(output_dir) / CHECKPOINTS
    if not directory.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(directory))
    return Path(found) if found else None


def check_output_dir(settings: SFTSettings) -> None:
    """A fresh run needs a directory without a run; `resume` needs one, started with the same settings."""
    output = Path(settings.output_dir)
    saved_file = output / SETTINGS_FILE
    checkpoint = last_checkpoint(output)
    if not settings.resume:
        if saved_file.exists() or checkpoint is not None:
            raise SFTRunError(f"{output} already holds an sft run; pass --resume to continue it, or choose "
                              f"another --output-dir")
        return
    if checkpoint is None:
        raise SFTRunError(f"--resume: {output / CHECKPOINTS} has no checkpoint to continue from (checkpoints are "
                          f"written every --save-steps steps); start without --resume")
    if saved_file.exists():
        saved = json.loads(saved_file.read_text())
        now = settings_record(settings)
        changed = [f"{name}: was {saved.get(name)!r}, now {value!r}" if name != "data_sha256" else
                   f"the contents of {settings.data} (sha256)" for name, value in now.items()
                   if name not in RESUME_MAY_CHANGE and saved.get(name) != value]
        if changed:
            raise SFTRunError("--resume continues a run with its own settings; these differ: " + "; ".join(changed))


def settings_record(settings: SFTSettings) -> dict[str, Any]:
    """What `sft_settings.json` holds: the settings and the data file's sha256 (a resumed run must see the
    same transcripts, not only the same path)."""
    import hashlib

    digest = hashlib.sha256(Path(settings.data).read_bytes()).hexdigest() if Path(settings.data).is_file() else None
    return {**json.loads(json.dumps(asdict(settings))), "data_sha256": digest}


def examples_dataset(examples: list[TurnExample]):
    """The rows `SFTTrainer` trains on: pre-tokenized `input_ids` and `completion_mask`."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                              "completion_mask": [e.completion_mask for e in examples]})


def lora_config(model, settings: SFTSettings, log: Callable[[str], None]):
    """A PEFT LoRA config on the targets RL would adapt (`models.lora_targets`), described in the log."""
    from stateset_agents.models.lora_targets import resolve_lora_targets

    plan = resolve_lora_targets(model, settings.lora_target_modules, include_experts=settings.lora_target_experts)
    log(plan.describe(settings.lora_r))
    return plan.build_lora_config(settings.lora_r, settings.lora_alpha)


def _checkpointing_field(config_class) -> str:
    """transformers 5.2x renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns)."""
    fields = config_class.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def trainer_arguments(settings: SFTSettings, bf16: bool, on_cpu: bool):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(Path(settings.output_dir) / CHECKPOINTS),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.effective_learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        seed=settings.seed,
        data_seed=settings.seed,
        max_length=None,  # sft_data set long turns apart whole: truncation would cut the target
        completion_only_loss=True,
        **{_checkpointing_field(SFTConfig): settings.gradient_checkpointing},
        bf16=bf16,  # TRL's default turns bf16 autocast on; only a bf16 model gets it here
        use_cpu=on_cpu,
        report_to=settings.report_to or "none",
        dataset_num_proc=None,
    )


def run_sft(settings: SFTSettings, log: Callable[[str], None] = print, callbacks: list | None = None) -> SFTResult:
    """Validate the transcripts, train, and write the output directory (module docstring)."""
    started = time.perf_counter()
    check_output_dir(settings)
    transcripts = read_transcripts(settings.data)  # before anything heavy loads: bad data fails in a second

    import torch
    from trl import SFTTrainer

    from stateset_agents.core.formats import get_chat_format
    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.rollout.encoding import PromptEncoder

    loaded = load_model(settings.model, LoadSettings(dtype=settings.dtype, device=settings.device,
                                                     trust_remote_code=settings.trust_remote_code))
    encoder = PromptEncoder(loaded.tokenizer, get_chat_format(loaded.tokenizer), loaded.image_settings)
    examples, too_long = build_examples(transcripts, encoder, settings.thinking, settings.max_length)
    if not examples:
        raise SFTRunError(f"every assistant turn is longer than --max-length {settings.max_length} tokens")
    target_tokens = sum(sum(e.completion_mask) for e in examples)
    log(f"sft: {len(transcripts)} transcripts, {len(examples)} assistant turns, {target_tokens} target tokens "
        f"({type(encoder.chat_format).__name__})" + (f"; {len(too_long)} turns longer than --max-length "
                                                     f"{settings.max_length} skipped" if too_long else ""))
    output = Path(settings.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / SETTINGS_FILE).write_text(json.dumps(settings_record(settings), indent=2))
    special_ids = _special_token_ids(loaded.model)
    trainer = SFTTrainer(
        model=loaded.model,
        args=trainer_arguments(settings, bf16=next(loaded.model.parameters()).dtype == torch.bfloat16,
                               on_cpu=loaded.device.type == "cpu"),
        train_dataset=examples_dataset(examples),
        processing_class=loaded.tokenizer,
        peft_config=lora_config(loaded.model, settings, log) if settings.use_lora else None,
        callbacks=callbacks,
    )
    checkpoint = last_checkpoint(output) if settings.resume else None
    if checkpoint is not None:
        log(f"sft: resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    adapter_dir = output / ADAPTER if settings.use_lora else None
    if adapter_dir is not None:
        trainer.model.save_pretrained(adapter_dir)
    model_dir = save_merged(trainer.model, loaded, output / MODEL, special_ids)
    summary = {"transcripts": len(transcripts), "examples": len(examples), "skipped_too_long": len(too_long),
               "target_tokens": target_tokens, "global_step": trainer.state.global_step, "losses": losses,
               "seconds": time.perf_counter() - started, "chat_format": type(encoder.chat_format).__name__}
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    tasks = {(t.metadata or {}).get("task") for t in transcripts}
    task = next(iter(tasks)) if len(tasks) == 1 and isinstance(next(iter(tasks)), str) else None
    return SFTResult(output, model_dir, adapter_dir, trainer.state.global_step, losses, task)


def _special_token_ids(model) -> dict[str, Any]:
    """The model's special-token ids (config and generation config), to restore after training."""
    text_config = model.config.get_text_config()
    return {"config": {name: getattr(text_config, name, None) for name in ("bos_token_id", "eos_token_id",
                                                                          "pad_token_id")},
            "generation": copy.deepcopy(getattr(model, "generation_config", None))}


def save_merged(model, loaded, directory: Path, special_ids: dict[str, Any]) -> Path:
    """The model with its LoRA adapter folded in (PEFT's merge), saved with the tokenizer (and Kimi's image
    settings) as an ordinary model directory. `model` is merged in place."""
    from stateset_agents.models.vision import ImageProcessorSettings

    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    text_config = merged.config.get_text_config()
    for name, value in special_ids["config"].items():
        setattr(text_config, name, value)
    if special_ids["generation"] is not None:
        merged.generation_config = special_ids["generation"]
    directory.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    if loaded.is_kimi:
        (loaded.image_settings or ImageProcessorSettings.load(loaded.path)).save(directory)
    return directory
