"""Policy updates on a rollout batch: exact rollout tokens, assistant-only mask, several optimizer steps.

The rollout batch (all episodes of an iteration) is split into `num_minibatches` optimizer steps
(DESIGN.md invariant 4: after the first step π_θ ≠ π_old, so the GSPO ratio moves and clipping
acts). Each minibatch is processed in micro-batches of `micro_batch_episodes` episodes whose
gradients are accumulated. Rows are assistant turns; all turns of one episode form one GSPO
sequence (`sequence_index`), so the sequence ratio is the geometric mean over every token the
policy sampled in the episode. π_old is the sampler's own logprob (exact: see
tests/test_generation_exactness.py), so no extra forward pass is spent on it. What a row needs
to be scored the way it was sampled travels with it: its sampling temperature and the policy
version that sampled it (and, from a separate sampling engine, that engine's logprobs).
"""

from __future__ import annotations

import math
from contextlib import nullcontext as _no_context
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from stateset_agents.rollout.encoding import EncodedPrompt
from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions
from stateset_agents.runs.metrics import reduce_metric


@dataclass
class PolicyRow:
    """One assistant turn to train on, with the facts of how it was sampled."""

    prompt: EncodedPrompt
    completion_ids: list[int]
    old_logprobs: list[float]  # log pi_old (the sampler's own when the sampler is the trainer's policy)
    episode: int  # index of the episode (GSPO sequence) in the rollout batch
    advantage: float
    temperature: float  # the sampler's logprob temperature: scoring divides the logits by the same
    policy_version: int | None = None  # optimizer steps the sampling policy had taken (None: unknown)
    sampler_logprobs: list[float] | None = None  # another engine's log mu; None = old_logprobs are the sampler's
    ref_logprobs: list[float] | None = None
    teacher_logprobs: list[float] | None = None
    replayed: bool = False  # an earlier task's stored episode (continual replay), not this iteration's


def rows_from_trajectories(trajectories, advantages: list[float], first_episode: int = 0) -> list[PolicyRow]:
    """Every sampled turn of every episode; turns with no sampled tokens are dropped."""
    rows = []
    for offset, (trajectory, advantage) in enumerate(zip(trajectories, advantages)):
        for turn in trajectory.turns:
            if not turn.completion_ids:
                continue
            if turn.temperature is None:
                raise ValueError("a turn with sampled tokens records no sampling temperature (TurnSample.temperature): "
                                 "its logprobs cannot be reproduced by the trainer")
            prompt = EncodedPrompt(turn.prompt_ids, turn.pixel_values, turn.image_grid_thw)
            rows.append(PolicyRow(prompt, turn.completion_ids, turn.logprobs, first_episode + offset, float(advantage),
                                  temperature=turn.temperature, policy_version=turn.policy_version))
    return rows


def split_episodes(episodes: list[int], parts: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle episode ids and cut them into `parts` nearly equal, non-empty chunks."""
    order = [episodes[i] for i in torch.randperm(len(episodes), generator=generator).tolist()]
    parts = max(1, min(parts, len(order)))
    size = math.ceil(len(order) / parts)
    return [order[i:i + size] for i in range(0, len(order), size)]


@dataclass
class MicroBatch:
    """Tensors for one forward/backward: rows of whole episodes."""

    rows: list[PolicyRow]
    old_logprobs: torch.Tensor  # [R, C]
    advantages: torch.Tensor  # [R]
    sequence_index: torch.Tensor  # [R] local episode index 0..E-1
    ref_logprobs: torch.Tensor | None  # [R, C]
    teacher_logprobs: torch.Tensor | None  # [R, C]; rows without teacher logprobs hold zeros
    num_episodes: int
    sampler_logprobs: torch.Tensor | None = None  # [R, C] log mu of a separate sampling engine
    temperature: float | torch.Tensor = 1.0  # the rows' sampling temperature (a [R, 1, 1] tensor if they differ)
    teacher_rows: torch.Tensor | None = None  # [R] bool: the rows with teacher logprobs, when not all have them


def _right_aligned(values: list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(values), width), dtype=torch.float32)
    for row, seq in enumerate(values):
        if seq:
            out[row, width - len(seq):] = torch.tensor(seq, dtype=torch.float32)
    return out.to(device)


def rows_temperature(rows: list[PolicyRow], device: torch.device) -> float | torch.Tensor:
    """The temperature to score `rows` at: theirs when they share one, else one per row ([R, 1, 1])."""
    temperatures = [r.temperature for r in rows]
    if len(set(temperatures)) == 1:
        return temperatures[0]
    return torch.tensor(temperatures, dtype=torch.float32, device=device)[:, None, None]


def make_micro_batch(rows: list[PolicyRow], device: torch.device) -> MicroBatch:
    width = max(len(r.completion_ids) for r in rows)
    local = {episode: i for i, episode in enumerate(dict.fromkeys(r.episode for r in rows))}
    optional = lambda name: (  # noqa: E731
        _right_aligned([getattr(r, name) for r in rows], width, device)
        if all(getattr(r, name) is not None for r in rows) else None
    )
    with_teacher = [r.teacher_logprobs is not None for r in rows]
    teacher_rows = torch.tensor(with_teacher, device=device) if any(with_teacher) and not all(with_teacher) else None
    return MicroBatch(
        rows=rows,
        old_logprobs=_right_aligned([r.old_logprobs for r in rows], width, device),
        advantages=torch.tensor([r.advantage for r in rows], dtype=torch.float32, device=device),
        sequence_index=torch.tensor([local[r.episode] for r in rows], dtype=torch.long, device=device),
        ref_logprobs=optional("ref_logprobs"),
        teacher_logprobs=(_right_aligned([r.teacher_logprobs or [] for r in rows], width, device)
                          if any(with_teacher) else None),
        num_episodes=len(local),
        sampler_logprobs=optional("sampler_logprobs"),
        temperature=rows_temperature(rows, device),
        teacher_rows=teacher_rows,
    )


@dataclass
class StepStats:
    """Statistics of one optimizer step, reduced over its micro-batches (`metrics.reduce_metric`:
    extremes by min/max, counts summed, the rest averaged weighted by episodes)."""

    values: dict[str, float] = field(default_factory=dict)
    skipped_nonfinite: bool = False


LossFn = Callable[[torch.Tensor, MicroBatch, torch.Tensor, Any], tuple[torch.Tensor, dict[str, float]]]


def optimizer_step(
    model,
    optimizer,
    scheduler,
    micro_batches: list[MicroBatch],
    loss_fn: LossFn,
    *,
    pad_token_id: int,
    max_grad_norm: float,
    total_episodes: int | None = None,
    parallel=None,
) -> StepStats:
    """Accumulate gradients over `micro_batches`, clip, step. Non-finite loss or gradients skip the step.

    Each micro-batch is scored at its rows' own sampling temperature (`MicroBatch.temperature`).
    Data-parallel (`parallel`, training/distributed.py): `micro_batches` are this rank's share of a
    minibatch of `total_episodes` episodes; the last backward reduces gradients across ranks (DDP
    averages, so losses are scaled by the world size), and a skip is agreed by every rank. A
    micro-batch with `num_episodes == 0` only joins the reduction (weight 0, no statistics).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    total_episodes = total_episodes or sum(mb.num_episodes for mb in micro_batches)
    world = parallel.world_size if parallel is not None and parallel.enabled else 1
    optimizer.zero_grad(set_to_none=True)
    collected: dict[str, list[float]] = {}
    weights: dict[str, list[float]] = {}
    nonfinite = False
    for index, mb in enumerate(micro_batches):
        sync = index == len(micro_batches) - 1
        with parallel.sync_context(model, sync) if world > 1 else _no_context():
            batch = build_scoring_batch([r.prompt for r in mb.rows], [r.completion_ids for r in mb.rows],
                                        pad_token_id, device, dtype)
            scored = score_completions(model, batch, temperature=mb.temperature, with_entropy=True)
            loss, stats = loss_fn(scored.logprobs, mb, batch.completion_mask, scored)
            if not torch.isfinite(loss):
                if world == 1:
                    optimizer.zero_grad(set_to_none=True)
                    return StepStats({"loss/total": float("nan")}, skipped_nonfinite=True)
                nonfinite = True  # the other ranks wait in the gradient reduction: finish it, then skip together
            weight = mb.num_episodes / total_episodes  # the loss is a mean over episodes (GSPO sequences)
            (loss * (weight * world)).backward()
        if mb.num_episodes == 0:
            continue
        mask = batch.completion_mask
        stats["entropy"] = float((scored.entropy * mask).sum() / mask.sum().clamp(min=1))
        for key, value in stats.items():
            collected.setdefault(key, []).append(float(value))
            weights.setdefault(key, []).append(weight)
    if world > 1 and parallel.any(nonfinite):
        optimizer.zero_grad(set_to_none=True)
        return StepStats({"loss/total": float("nan")}, skipped_nonfinite=True)
    values = {key: reduce_metric(key, collected[key], weights[key]) for key in collected}
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return StepStats({**values, "grad_norm": float("nan")}, skipped_nonfinite=True)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats({**values, "grad_norm": float(grad_norm)})


@torch.no_grad()
def fill_reference_logprobs(model, rows: list[PolicyRow], *, attribute: str, context, pad_token_id: int,
                            batch_rows: int = 16) -> None:
    """Score `rows` under another policy (inside `context`, e.g. the adapter-disabled model) into
    `attribute`, each at its own sampling temperature."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    with context():
        for start in range(0, len(rows), batch_rows):
            chunk = rows[start:start + batch_rows]
            batch = build_scoring_batch([r.prompt for r in chunk], [r.completion_ids for r in chunk],
                                        pad_token_id, device, dtype)
            logprobs = score_completions(model, batch, temperature=rows_temperature(chunk, device)).logprobs
            for row, values in zip(chunk, logprobs):
                setattr(row, attribute, values[values.shape[0] - len(row.completion_ids):].tolist())
