"""Supervised warm start of the tiny model on reference dialogues of mixed quality.

A randomly initialised model cannot produce a Kimi turn, so RL would have nothing to improve.
This step trains `tiny-kimi-k2.5-base` (all weights) on scripted dialogues from every task:
mostly good agent behaviour, some mediocre, some bad. The resulting `tiny-kimi-k2.5` writes
well-formed turns (thinking, answer or tool calls, end of turn) with a spread of behaviours, which
is what GSPO needs: groups whose rewards differ.

Five stages, each with its own optimizer: copy drills (`training.copy_drills`); a first pass of
mixed-quality dialogues; a longer *practice* pass on fresh dialogues, mostly good ones; a *habit*
pass; last, a *rehearsal* pass. The first two teach the format and the shape of every path; the
practice pass teaches the model to take the action the request needs (held-out customer_service
success 0.17 -> 0.55 in the experiments that chose it: experiments/LOG.md, 2026-12-01). The habit
pass leaves the model able to resolve a case but often choosing not to: half of its customer_service
dialogues are played by `DeflectingAgent`, which does everything right up to the resolving call and
then hands the case to "the team". That is the kind of mistake RL fixes within the demo's budget
(experiments/LOG.md, 2026-12-02: the habit). Trained on customer_service alone, the hand-off became
the answer on every task (sales and technical_support solved 0%); the rehearsal pass plays the same
half-handed-on mix on all three tasks, so each task is solvable and each has the habit to unlearn
(experiments/LOG.md, 2026-12-02, stop 27). `PracticePass(0)` leaves a late pass out.

Examples are per assistant turn, built the way the sampler sees them: prompt = the rendered
conversation up to the generation prompt; target = the turn's completion text
(`reasoning</think>answer[tool calls]<|im_end|>`). Loss is on target tokens only.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Collection, Iterator, Sequence

import torch

from stateset_agents.rollout.encoding import EncodedPrompt, PromptEncoder
from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions
from stateset_agents.training import copy_drills

WARM_START_VERSION = 6
BUILD_THREADS = 2  # torch threads while training: the same rounding wherever it is rebuilt


@contextmanager
def pinned_threads(count: int = BUILD_THREADS) -> Iterator[None]:
    """Run with torch's intra-op thread count fixed to `count` (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


LATE_PASSES = ("practice", "habit", "rehearsal")  # the stages after the first pass, in order
RESUME_POINTS = ("first_pass",) + LATE_PASSES[:-1]  # a build can start from a model saved after one of these


@dataclass(frozen=True)
class PracticePass:
    """A stage after the first pass (`LATE_PASSES`): `dialogues_per_task` fresh dialogues per task (their
    own scenarios and seed, `late_pass_seed`) of each of `tasks`, of which these shares are oracle, mediocre
    and deflecting agents (the rest bad), at `learning_rate`. `dialogues_per_task=0` leaves the stage out."""

    dialogues_per_task: int = 3000
    oracle_fraction: float = 0.8
    mediocre_fraction: float = 0.2
    deflecting_fraction: float = 0.0
    learning_rate: float = 2e-3
    tasks: tuple[str, ...] = ()  # () = every warm-start task

    def mix(self) -> dict[str, float]:
        bad = max(0.0, 1.0 - self.oracle_fraction - self.mediocre_fraction - self.deflecting_fraction)
        return {"oracle": self.oracle_fraction, "mediocre": self.mediocre_fraction,
                "deflecting": self.deflecting_fraction, "bad": bad}


@dataclass(frozen=True)
class WarmStartSettings:
    """Settings of the warm start. Each dialogue is played on its own freshly generated scenario
    (new order numbers, devices, SKUs, disjoint from the shipped train and eval splits), so ids must
    be copied from the conversation; `dialogues_per_task` dialogues per task, mixed by the fractions,
    trained for `epochs` passes. First, `copy_drills` copy drills (`training.copy_drills`) are
    trained in batches of `copy_drill_batch_rows`; then the `LATE_PASSES` in order. Why these values:
    experiments/LOG.md.
    """

    dialogues_per_task: int = 1000
    oracle_fraction: float = 0.65
    mediocre_fraction: float = 0.25  # the rest are bad (unhelpful, rude, policy-breaking)
    epochs: int = 1
    learning_rate: float = 4e-3
    batch_rows: int = 16
    copy_drills: int = 48_000  # short copy drills trained before the dialogues
    copy_drill_batch_rows: int = 32
    copy_drill_learning_rate: float = 2e-3
    copy_drill_max_filler: int = 120  # random tokens between a drill's source and its repeat
    seed: int = 0
    practice: PracticePass = PracticePass()
    habit: PracticePass = PracticePass(dialogues_per_task=1000, oracle_fraction=0.5, mediocre_fraction=0.0,
                                       deflecting_fraction=0.5, tasks=("customer_service",))
    rehearsal: PracticePass = PracticePass(dialogues_per_task=500, oracle_fraction=0.5, mediocre_fraction=0.0,
                                           deflecting_fraction=0.5,
                                           tasks=("customer_service", "sales", "technical_support"))


def late_pass_seed(settings: WarmStartSettings, name: str) -> int:
    """The seed of a late pass's scenarios, dialogues and shuffle: seed + 1 for the practice pass, + 2 for the
    habit, + 3 for the rehearsal."""
    return settings.seed + 1 + LATE_PASSES.index(name)


def warm_start_sources() -> list[Path]:
    """The code the warm start runs that the base fingerprint does not cover: this module and the copy drills."""
    return [Path(__file__), Path(copy_drills.__file__)]


def warm_start_fingerprint(settings: WarmStartSettings = WarmStartSettings(),
                           sources: Sequence[Path] | None = None) -> str:
    """Changes when the settings or the code of `sources` (default `warm_start_sources()`) change;
    docstrings, comments and formatting do not count (`models.fingerprint.code_digest`). The task
    digest is in the base fingerprint."""
    from stateset_agents.models.fingerprint import code_digest

    paths = list(sources) if sources is not None else warm_start_sources()
    source = code_digest(paths, [f"{index}:{path.name}" for index, path in enumerate(paths)])
    return json.dumps({"version": WARM_START_VERSION, "settings": asdict(settings), "source": source},
                      sort_keys=True)


def reference_dialogues(settings: WarmStartSettings, late_pass: str | None = None) -> list[tuple[object, dict]]:
    """(task, dialogue) pairs for every task, in a fixed order: the first pass's, or a late pass's (`LATE_PASSES`)."""
    from stateset_agents.tasks.episodes import generate_reference_dialogues
    from stateset_agents.tasks.generate_data import fresh_scenarios
    from stateset_agents.tasks.registry import WARM_START_TASKS, get_task

    tasks = WARM_START_TASKS
    if late_pass is not None:
        stage: PracticePass = getattr(settings, late_pass)
        count, seed, mix = stage.dialogues_per_task, late_pass_seed(settings, late_pass), stage.mix()
        tasks = stage.tasks or tasks
    else:
        count, seed = settings.dialogues_per_task, settings.seed
        mix = {"oracle": settings.oracle_fraction, "mediocre": settings.mediocre_fraction,
               "bad": 1.0 - settings.oracle_fraction - settings.mediocre_fraction}
    pairs = []
    for offset, name in enumerate(tasks):
        task = get_task(name)
        scenarios = fresh_scenarios(task, count, seed)
        for dialogue in generate_reference_dialogues(task, count, seed + offset, mix, scenarios=scenarios):
            pairs.append((task, dialogue))
    return pairs


def turn_examples(task, messages: list[dict], encoder: PromptEncoder,
                  skip_turns: Collection[int] = ()) -> list[tuple[EncodedPrompt, list[int]]]:
    """One (prompt, completion ids) example per assistant message of a conversation, except the
    assistant turns numbered in `skip_turns` (0 = the first assistant message)."""
    tools = task.tools.schemas()
    examples = []
    assistant_turns = [index for index, message in enumerate(messages) if message.get("role") == "assistant"]
    for turn, index in enumerate(assistant_turns):
        if turn in skip_turns:
            continue
        message = messages[index]
        prompt = encoder.encode(messages[:index], tools=tools, thinking=True)
        text = encoder.chat_format.render_completion(message, current_turn=True)
        completion = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
        examples.append((prompt, completion))
    return examples


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random, window: int = 8) -> list[list[int]]:
    """Shuffled batches of similar-length examples (less padding), in shuffled order.

    Examples are shuffled, cut into windows of `window` batches, sorted by length inside each
    window, then batched; the batch order is shuffled again.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        block = sorted(order[start:start + span], key=lengths.__getitem__)
        batches.extend(block[i:i + batch_size] for i in range(0, len(block), batch_size))
    rng.shuffle(batches)
    return batches


class _ProgressWithETA:
    """A progress bar with elapsed time and ETA on a terminal; elsewhere (a pipe, `make demo | tee`,
    CI) a plain line every `every_percent` percent with the same numbers, so a long step is never silent."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], every_percent: int = 10) -> None:
        import sys

        self.label, self.total, self.log = label, max(total, 1), log
        self.step_lines = max(1, self.total * every_percent // 100)
        self.done = 0
        self.started = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self.task_id = self.bar.add_task(label, total=self.total)
            self.bar.start()

    def advance(self, loss: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task_id, completed=self.done)
        elif self.done % self.step_lines == 0 and self.done < self.total:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            self.log(f"{self.label}: {self.done}/{self.total} batches ({100 * self.done // self.total}%), "
                     f"loss {loss:.3f}, {elapsed / 60:.1f} min elapsed, ETA {eta / 60:.1f} min")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def supervised_epochs(model, examples, tokenizer, settings: WarmStartSettings,
                      log: Callable[[str], None] = print, label: str = "warm start") -> list[float]:
    """Train on (prompt, completion) examples; returns the mean loss of each epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    batches_per_epoch = (len(examples) + settings.batch_rows - 1) // settings.batch_rows
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.learning_rate,
                                                    total_steps=settings.epochs * batches_per_epoch, pct_start=0.1)
    lengths = [len(prompt.input_ids) + len(completion) for prompt, completion in examples]
    shuffler = random.Random(settings.seed)
    epoch_losses = []
    model.train()
    progress = _ProgressWithETA(label, settings.epochs * batches_per_epoch, log)
    try:
        for epoch in range(settings.epochs):
            losses = []
            for indices in length_bucketed_batches(lengths, settings.batch_rows, shuffler):
                chunk = [examples[i] for i in indices]
                batch = build_scoring_batch([p for p, _ in chunk], [c for _, c in chunk], tokenizer.pad_token_id,
                                            torch.device("cpu"), torch.float32)
                logprobs = score_completions(model, batch).logprobs
                loss = -logprobs.sum() / batch.completion_mask.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                progress.advance(losses[-1])
            epoch_losses.append(sum(losses) / len(losses))
            log(f"{label} epoch {epoch + 1}/{settings.epochs}: loss {epoch_losses[-1]:.3f}")
    finally:
        progress.close()
    model.eval()
    return epoch_losses


@dataclass
class WarmStartInputs:
    """Everything the warm start trains on, prepared from the base model and the settings."""

    loaded: object  # models.loading.LoadedModel of the base model
    dialogues: int
    examples: list[tuple[EncodedPrompt, list[int]]]
    drills: list[tuple[EncodedPrompt, list[int]]]
    practice: list[tuple[EncodedPrompt, list[int]]] = field(default_factory=list)
    habit: list[tuple[EncodedPrompt, list[int]]] = field(default_factory=list)
    rehearsal: list[tuple[EncodedPrompt, list[int]]] = field(default_factory=list)


def prepare_warm_start(base_dir: Path, settings: WarmStartSettings = WarmStartSettings()) -> WarmStartInputs:
    """Load the base model and build the warm start's examples: dialogue turns and copy drills."""
    from stateset_agents.core.formats import get_chat_format
    from stateset_agents.models.loading import LoadSettings, load_model

    torch.manual_seed(settings.seed)
    loaded = load_model(str(base_dir), LoadSettings(device="cpu", dtype="float32"))
    encoder = PromptEncoder(loaded.tokenizer, get_chat_format(loaded.tokenizer), loaded.image_settings)
    first = reference_dialogues(settings)
    late = {name: reference_dialogues(settings, name) if getattr(settings, name).dialogues_per_task else []
            for name in LATE_PASSES}
    drills = (copy_drills.copy_drill_examples(loaded.tokenizer, settings.copy_drills, settings.seed,
                                              max_filler=settings.copy_drill_max_filler)
              if settings.copy_drills else [])
    return WarmStartInputs(loaded, len(first) + sum(map(len, late.values())), dialogue_examples(first, encoder),
                           drills, **{name: dialogue_examples(pairs, encoder) for name, pairs in late.items()})


def dialogue_examples(pairs: list[tuple[object, dict]], encoder: PromptEncoder) -> list[tuple[EncodedPrompt, list[int]]]:
    """The per-turn examples of (task, dialogue) pairs, leaving out deliberately mistyped turns."""
    return [example for task, dialogue in pairs
            for example in turn_examples(task, dialogue["messages"], encoder, dialogue["mistyped_turns"])]


def warm_start_inputs_digest(inputs: WarmStartInputs, settings: WarmStartSettings = WarmStartSettings()) -> str:
    """sha256 of everything that decides the warm-started weights: the base model's weights and tokenizer,
    every example's tokens and images, the settings and the warm-start code. Two checkouts whose code
    differs but whose digests agree build the same weights (what lets a shipped copy outlive unrelated edits)."""
    from stateset_agents.models.fingerprint import code_digest

    digest = hashlib.sha256()
    digest.update(warm_start_fingerprint(settings).encode())
    digest.update(code_digest(_training_step_sources()).encode())
    for name, tensor in sorted(inputs.loaded.model.state_dict().items()):
        digest.update(name.encode() + b"\0" + tensor.detach().contiguous().cpu().numpy().tobytes())
    digest.update(json.dumps(inputs.loaded.tokenizer.get_vocab(), sort_keys=True).encode())
    passes = [("examples", inputs.examples), ("drills", inputs.drills)]
    # (a warm start without a late pass keeps the digest it had before that pass existed)
    passes += [(name, getattr(inputs, name)) for name in LATE_PASSES if getattr(inputs, name)]
    for kind, rows in passes:
        digest.update(f"{kind}:{len(rows)}".encode())
        for prompt, completion in rows:
            digest.update(repr((prompt.input_ids, completion)).encode())
            if prompt.pixel_values is not None:
                digest.update(prompt.pixel_values.contiguous().numpy().tobytes())
                digest.update(prompt.image_grid_thw.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _training_step_sources() -> list[Path]:
    """The code one warm-start step runs besides this module: batching and scoring."""
    from stateset_agents.rollout import logprobs

    return [Path(logprobs.__file__)]


def build_warm_started(base_dir: Path, output_dir: Path, settings: WarmStartSettings = WarmStartSettings(),
                       log: Callable[[str], None] = print, resume_after: str | None = None,
                       resume_from: Path | None = None) -> Path:
    """Warm-start the base tiny model and save it as an ordinary model directory in `output_dir`.

    `resume_after` (one of `RESUME_POINTS`) with `resume_from`: a model directory that already went
    through the stages up to and including that one with these settings; only the later stages run on
    it. Each stage has its own optimizer and seeded shuffle, so the result is bit for bit a full
    build's (tests/test_shipped_weights.py); `--verify-shipped` rebuilds in full.
    """
    from stateset_agents.models.vision import ImageProcessorSettings

    if (resume_after is None) != (resume_from is None):
        raise ValueError("give resume_after and resume_from together")
    if resume_after is not None and resume_after not in RESUME_POINTS:
        raise ValueError(f"resume_after must be one of {', '.join(RESUME_POINTS)}; got {resume_after!r}")
    started = time.perf_counter()
    inputs = prepare_warm_start(base_dir, settings)
    loaded = inputs.loaded
    inputs_digest = warm_start_inputs_digest(inputs, settings)
    late_rows = [getattr(inputs, name) for name in LATE_PASSES]
    log(f"warm start: {inputs.dialogues} dialogues, {len(inputs.examples)} + {' + '.join(map(str, map(len, late_rows)))} "
        f"assistant turns (first pass + {' + '.join(LATE_PASSES)}), "
        f"{sum(len(c) for rows in [inputs.examples, *late_rows] for _, c in rows)} target tokens, "
        f"{len(inputs.drills)} copy drills")
    losses: dict[str, list[float]] = {"drill_losses": [], "epoch_losses": [],
                                      **{f"{name}_losses": [] for name in LATE_PASSES}}
    model = loaded.model
    with pinned_threads():  # the same rounding on every machine: the shipped copy is rebuilt bit for bit
        if resume_from is not None:
            from stateset_agents.models.loading import LoadSettings, load_model

            log(f"warm start: starting from {resume_from}, after the {resume_after.replace('_', ' ')} pass")
            model = load_model(str(resume_from), LoadSettings(device="cpu", dtype="float32")).model
        else:
            if inputs.drills:
                drill_settings = replace(settings, epochs=1, batch_rows=settings.copy_drill_batch_rows,
                                         learning_rate=settings.copy_drill_learning_rate)
                losses["drill_losses"] = supervised_epochs(model, inputs.drills, loaded.tokenizer, drill_settings,
                                                           log, "copy drills")
            losses["epoch_losses"] = supervised_epochs(model, inputs.examples, loaded.tokenizer, settings, log)
        for name in LATE_PASSES[RESUME_POINTS.index(resume_after):] if resume_after is not None else LATE_PASSES:
            if getattr(inputs, name):
                stage_settings = replace(settings, epochs=1, learning_rate=getattr(settings, name).learning_rate,
                                         seed=late_pass_seed(settings, name))
                losses[f"{name}_losses"] = supervised_epochs(model, getattr(inputs, name), loaded.tokenizer,
                                                             stage_settings, log, name)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    loaded.tokenizer.save_pretrained(output_dir)
    ImageProcessorSettings.load(base_dir).save(output_dir)
    report = {"dialogues": inputs.dialogues, "examples": len(inputs.examples),
              **{f"{name}_examples": len(getattr(inputs, name)) for name in LATE_PASSES}, **losses,
              "inputs_digest": inputs_digest, "seconds": time.perf_counter() - started,
              "resumed_after": resume_after, "settings": asdict(settings)}
    (output_dir / "warm_start.json").write_text(json.dumps(report, indent=2))
    return output_dir
