"""The training objective, every term of it, as one pure function over tensors.

Notation (shape suffixes): B rows, T tokens per row, S sequences. A *sequence* is one sampled
response y_i: by default one row, but a multi-turn episode stored as one row per assistant turn
can be declared one sequence with `sequence_index_B` (rows with the same index form one
sequence; their masked tokens are pooled as if the rows were concatenated).

GSPO (Zheng et al. 2025, arXiv:2507.18071, eq. 5-7):

    s_i = exp( (1/|y_i|) * sum_t (log pi(y_i,t) - log pi_old(y_i,t)) )
    J   = mean_i min(s_i * A_i, clip(s_i, 1 - eps_low, 1 + eps_high) * A_i)

GSPO-token (same paper, eq. 13-14): s_i,t = sg[s_i] * pi(y_i,t) / sg[pi(y_i,t)] - numerically
s_i, with the gradient of a token-level ratio; token objectives are averaged over each
sequence's tokens, then over sequences. With one advantage per sequence its gradient equals GSPO's.

GRPO (token level, DeepSeekMath): r_i,t = pi(y_i,t) / pi_old(y_i,t), per-token clipping, averaged
over each sequence's tokens, then over sequences.

KL terms (each optional): the k3 estimator exp(o - logp) - (o - logp) - 1 per sampled token
against another policy's log-probs o, aggregated like the policy term (token mean per sequence,
then mean over sequences, `sequence_kl`), so every sequence weighs the same in every term:
  - reference KL (beta = kl_beta): o = log pi_ref, the base model (LoRA disabled);
  - teacher KL (beta = teacher_kl_beta): o = log pi_teacher, the previous task's frozen policy
    (learning without forgetting, training/continual.py). `teacher_kl_direction="forward"` estimates
    KL(pi_teacher || pi) instead, for tokens sampled from the teacher's side (replayed episodes):
    k3 with the roles swapped, exp(logp - o) - (logp - o) - 1, whose gradient in logp is
    exp(logp - o) - 1, bounded by 1 where the student has made a teacher token unlikely (the
    reverse k3's is exp(o - logp) - 1, unbounded there).

Importance-weight correction (off unless `sampler_logprobs_B_T` is given): when the tokens were
sampled by another engine than the trainer (e.g. an inference server), its log-probs log mu
differ from the trainer's log pi_old, and the samples are off-policy for pi_old. Each unit's
clipped objective is then multiplied by a truncated importance weight (TIS; Yao et al. 2025,
"Your efficient RL framework secretly brings you off-policy RL training"), detached:
  - gspo / gspo_token: w_i = min(exp((1/|y_i|) * sum_t (log pi_old - log mu)), C), the sequence's
    length-normalised ratio, like s_i;
  - grpo: w_i,t = min(pi_old(y_i,t) / mu(y_i,t), C), per token.
C = `importance_weight_cap`. Without sampler log-probs every weight is 1 (the sampler is the
trainer: its log-probs are pi_old exactly, see tests/test_generation_exactness.py).

    loss = -J_w + kl_beta * KL_ref + teacher_kl_beta * KL_teacher

Simplifications: advantages are per sequence (A_i,t = A_i); sequences without sampled tokens
are ignored; the loss is computed in float32.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["LOSS_TYPES", "LossType", "KL_DIRECTIONS", "KLDirection", "DEFAULT_IMPORTANCE_WEIGHT_CAP", "policy_loss",
           "sequence_kl", "k3_kl"]

LossType = Literal["gspo", "grpo", "gspo_token"]
LOSS_TYPES: tuple[str, ...] = ("gspo", "grpo", "gspo_token")
KLDirection = Literal["reverse", "forward"]
KL_DIRECTIONS: tuple[str, ...] = ("reverse", "forward")
DEFAULT_IMPORTANCE_WEIGHT_CAP = 2.0


def policy_loss(
    logprobs_B_T: Tensor,
    old_logprobs_B_T: Tensor,
    advantages_B: Tensor,
    mask_B_T: Tensor,
    *,
    loss_type: LossType = "gspo",
    clip_epsilon_low: float = 3e-4,
    clip_epsilon_high: float = 4e-4,
    sequence_index_B: Tensor | None = None,
    ref_logprobs_B_T: Tensor | None = None,
    kl_beta: float = 0.0,
    teacher_logprobs_B_T: Tensor | None = None,
    teacher_kl_beta: float = 0.0,
    teacher_rows_B: Tensor | None = None,
    teacher_kl_direction: KLDirection = "reverse",
    sampler_logprobs_B_T: Tensor | None = None,
    importance_weight_cap: float = DEFAULT_IMPORTANCE_WEIGHT_CAP,
) -> tuple[Tensor, dict[str, float]]:
    """The loss to minimise (policy term + KL terms) and statistics.

    Args:
        logprobs_B_T: log pi_theta of the sampled tokens; the only input that gets gradient.
        old_logprobs_B_T: log pi_old of the same tokens (the sampler's or a frozen forward).
        advantages_B: advantage of each row's sequence (equal across rows of one sequence).
        mask_B_T: 1 for sampled tokens, 0 for prompt/tool/padding tokens (any values there are ignored).
        loss_type: "gspo" (sequence ratio), "gspo_token" or "grpo" (token ratio).
        clip_epsilon_low / clip_epsilon_high: ratio clipped to [1 - low, 1 + high].
        sequence_index_B: int ids mapping rows to sequences; None = one sequence per row.
        ref_logprobs_B_T: log pi_ref for the reference KL (needed when kl_beta > 0).
        kl_beta: coefficient of the reference KL.
        teacher_logprobs_B_T: log pi_teacher for the LwF KL (needed when teacher_kl_beta > 0).
        teacher_kl_beta: coefficient of the teacher KL.
        teacher_rows_B: bool per row, the rows the teacher KL applies to (None: all); the others count as
            KL 0 in the mean over sequences (their teacher_logprobs_B_T values are ignored).
        teacher_kl_direction: "reverse" estimates KL(pi_theta || pi_teacher) (k3 for tokens sampled from
            pi_theta), "forward" KL(pi_teacher || pi_theta) (k3 for tokens sampled from the teacher).
        sampler_logprobs_B_T: log mu, the sampling engine's log-probs when it is not the trainer;
            None = no importance-weight correction.
        importance_weight_cap: C, the truncation of the importance weights (> 0).

    Returns:
        (loss [], stats) with stats as floats:
        - ratio_mean / ratio_min / ratio_max: over sequences (gspo, gspo_token) or tokens (grpo);
        - clip_frac_low: fraction of those units where the low clip is active *and changes the
          gradient*: ratio < 1 - eps_low with A < 0; clip_frac_high: ratio > 1 + eps_high with A > 0;
        - loss_policy (-J_w) and loss_total (the loss); policy_objective: J_w;
        - kl and loss_kl_ref (kl_beta * kl): only with reference log-probs;
        - kl_teacher and loss_kl_teacher: only with teacher log-probs;
        - importance_weight_mean / _min / _max: only with sampler log-probs (over the same units);
        - num_tokens, num_sequences: sampled tokens and non-empty sequences.
    """
    _check_inputs(logprobs_B_T, old_logprobs_B_T, advantages_B, mask_B_T, loss_type)
    if clip_epsilon_low < 0 or clip_epsilon_high < 0:
        raise ValueError(f"clip epsilons must be >= 0, got low={clip_epsilon_low}, high={clip_epsilon_high}")
    if kl_beta and ref_logprobs_B_T is None:
        raise ValueError("kl_beta > 0 needs ref_logprobs_B_T (log-probs under the reference policy).")
    if teacher_kl_beta and teacher_logprobs_B_T is None:
        raise ValueError("teacher_kl_beta > 0 needs teacher_logprobs_B_T (log-probs under the teacher policy).")
    if teacher_kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"teacher_kl_direction must be one of {KL_DIRECTIONS}, got {teacher_kl_direction!r}")
    if not importance_weight_cap > 0:
        raise ValueError(f"importance_weight_cap must be > 0, got {importance_weight_cap}")
    for name, other in (("ref_logprobs_B_T", ref_logprobs_B_T), ("teacher_logprobs_B_T", teacher_logprobs_B_T),
                        ("sampler_logprobs_B_T", sampler_logprobs_B_T)):
        if other is not None and other.shape != logprobs_B_T.shape:
            raise ValueError(f"{name} must be [B, T]={tuple(logprobs_B_T.shape)}, got {tuple(other.shape)}")
    sampled_B_T = mask_B_T.bool()
    logp_B_T = torch.where(sampled_B_T, logprobs_B_T.float(), 0.0)
    old_B_T = torch.where(sampled_B_T, old_logprobs_B_T.detach().float(), 0.0)
    seq_B, num_seqs = _sequence_ids(sequence_index_B, logp_B_T.shape[0], logp_B_T.device)
    tokens_S = _per_sequence(sampled_B_T.float().sum(-1), seq_B, num_seqs)
    valid_S = tokens_S > 0
    adv_S = _sequence_advantages(advantages_B.detach().float(), seq_B, num_seqs)
    log_ratio_B_T = logp_B_T - old_B_T
    eps = (clip_epsilon_low, clip_epsilon_high)

    def seq_mean(values_B_T: Tensor) -> Tensor:  # [B, T] -> [S]
        return _token_mean(values_B_T, sampled_B_T, seq_B, num_seqs, tokens_S)

    # log(pi_old / mu) per token: 0 (weight 1) without a separate sampler
    behaviour_B_T = None
    if sampler_logprobs_B_T is not None:
        behaviour_B_T = old_B_T - torch.where(sampled_B_T, sampler_logprobs_B_T.detach().float(), 0.0)

    if loss_type == "grpo":
        ratio_B_T = torch.exp(log_ratio_B_T)
        obj_B_T, low_B_T, high_B_T = _clipped_objective(ratio_B_T, adv_S[seq_B, None], *eps)
        weight_B_T = None
        if behaviour_B_T is not None:
            weight_B_T = torch.exp(behaviour_B_T).clamp(max=importance_weight_cap)
            obj_B_T = obj_B_T * weight_B_T
        objective_S = seq_mean(obj_B_T)
        units = (ratio_B_T[sampled_B_T], low_B_T[sampled_B_T], high_B_T[sampled_B_T])
        weights = weight_B_T[sampled_B_T] if weight_B_T is not None else None
    else:
        ratio_S = torch.exp(seq_mean(log_ratio_B_T))
        objective_S, low_S, high_S = _clipped_objective(ratio_S, adv_S, *eps)
        if loss_type == "gspo_token":
            token_ratio_B_T = ratio_S.detach()[seq_B, None] * torch.exp(logp_B_T - logp_B_T.detach())
            objective_S = seq_mean(_clipped_objective(token_ratio_B_T, adv_S[seq_B, None], *eps)[0])
        weight_S = None
        if behaviour_B_T is not None:
            weight_S = torch.exp(seq_mean(behaviour_B_T)).clamp(max=importance_weight_cap)
            objective_S = objective_S * weight_S
        units = (ratio_S[valid_S], low_S[valid_S], high_S[valid_S])
        weights = weight_S[valid_S] if weight_S is not None else None

    objective = _mean_or_zero(objective_S[valid_S], logp_B_T)
    loss = -objective
    terms: dict[str, Tensor] = {"loss_policy": -objective}
    if ref_logprobs_B_T is not None:
        kl = _sequence_k3(logp_B_T, ref_logprobs_B_T, sampled_B_T, seq_mean, valid_S)
        loss = loss + kl_beta * kl
        terms.update(kl=kl, loss_kl_ref=kl_beta * kl)
    if teacher_logprobs_B_T is not None:
        teacher_B_T = teacher_logprobs_B_T
        if teacher_rows_B is not None:  # other rows compare with themselves: k3 and its gradient are 0 there
            teacher_B_T = torch.where(teacher_rows_B.bool()[:, None], teacher_B_T.float(), logp_B_T.detach())
        kl_teacher = _sequence_k3(logp_B_T, teacher_B_T, sampled_B_T, seq_mean, valid_S,
                                  forward=teacher_kl_direction == "forward")
        loss = loss + teacher_kl_beta * kl_teacher
        terms.update(kl_teacher=kl_teacher, loss_kl_teacher=teacher_kl_beta * kl_teacher)
    terms.update(loss_total=loss, policy_objective=objective)
    return loss, _stats(units, weights, terms, tokens_S, valid_S)


def sequence_kl(logprobs_B_T: Tensor, other_logprobs_B_T: Tensor, mask_B_T: Tensor,
                sequence_index_B: Tensor | None = None) -> Tensor:
    """k3 estimate of KL(pi || other) on the sampled tokens: token mean per sequence, then mean over sequences.

    The KL terms of `policy_loss` are exactly this. Gradient flows through `logprobs_B_T` only;
    a scalar >= 0 that is 0 exactly when both agree on every sampled token (and 0, still on the
    graph, when nothing is sampled).
    """
    if other_logprobs_B_T.shape != logprobs_B_T.shape or mask_B_T.shape != logprobs_B_T.shape:
        raise ValueError(f"logprobs, other_logprobs and mask must all be [B, T]; got {tuple(logprobs_B_T.shape)}, "
                         f"{tuple(other_logprobs_B_T.shape)}, {tuple(mask_B_T.shape)}")
    sampled_B_T = mask_B_T.bool()
    logp_B_T = torch.where(sampled_B_T, logprobs_B_T.float(), 0.0)
    seq_B, num_seqs = _sequence_ids(sequence_index_B, logp_B_T.shape[0], logp_B_T.device)
    tokens_S = _per_sequence(sampled_B_T.float().sum(-1), seq_B, num_seqs)

    def seq_mean(values_B_T: Tensor) -> Tensor:
        return _token_mean(values_B_T, sampled_B_T, seq_B, num_seqs, tokens_S)

    return _sequence_k3(logp_B_T, other_logprobs_B_T, sampled_B_T, seq_mean, tokens_S > 0)


def k3_kl(logprobs_B_T: Tensor, ref_logprobs_B_T: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 >= 0. [B, T]."""
    delta_B_T = ref_logprobs_B_T - logprobs_B_T
    return torch.exp(delta_B_T) - delta_B_T - 1.0


def _sequence_k3(logp_B_T: Tensor, other_B_T: Tensor, sampled_B_T: Tensor, seq_mean, valid_S: Tensor,
                 forward: bool = False) -> Tensor:
    """Mean over non-empty sequences of the token-mean k3 KL (logp_B_T already zero where unsampled):
    KL(pi || other), or with `forward` KL(other || pi) (the same estimator with the roles swapped)."""
    other_B_T = torch.where(sampled_B_T, other_B_T.detach().float(), 0.0)
    per_token_B_T = k3_kl(other_B_T, logp_B_T) if forward else k3_kl(logp_B_T, other_B_T)
    return _mean_or_zero(seq_mean(per_token_B_T)[valid_S], logp_B_T)


def _clipped_objective(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, Tensor, Tensor]:
    """min(ratio * A, clip(ratio) * A), and where each clip side zeroes the gradient (bool, same shape)."""
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    objective = torch.minimum(ratio * adv, clipped * adv)
    low_active = (ratio < 1.0 - eps_low) & (adv < 0)
    high_active = (ratio > 1.0 + eps_high) & (adv > 0)
    return objective, low_active, high_active


def _sequence_ids(sequence_index_B: Tensor | None, num_rows: int, device: torch.device) -> tuple[Tensor, int]:
    """Contiguous sequence id per row [B] and the number of sequences S."""
    if sequence_index_B is None:
        return torch.arange(num_rows, device=device), num_rows
    if sequence_index_B.shape != (num_rows,):
        raise ValueError(f"sequence_index_B must have shape [{num_rows}], got {tuple(sequence_index_B.shape)}")
    unique_S, inverse_B = torch.unique(sequence_index_B.to(device), return_inverse=True)
    return inverse_B, unique_S.numel()


def _per_sequence(values_B: Tensor, seq_B: Tensor, num_seqs: int) -> Tensor:
    """Sum row values into their sequences: [B] -> [S]."""
    return torch.zeros(num_seqs, dtype=values_B.dtype, device=values_B.device).index_add(0, seq_B, values_B)


def _token_mean(
    values_B_T: Tensor, sampled_B_T: Tensor, seq_B: Tensor, num_seqs: int, tokens_S: Tensor
) -> Tensor:
    """Mean of `values_B_T` over each sequence's sampled tokens, pooled across its rows: [S]."""
    row_sums_B = torch.where(sampled_B_T, values_B_T, 0.0).sum(-1)
    return _per_sequence(row_sums_B, seq_B, num_seqs) / tokens_S.clamp(min=1.0)


def _sequence_advantages(advantages_B: Tensor, seq_B: Tensor, num_seqs: int) -> Tensor:
    """One advantage per sequence [S]; rows of one sequence must agree."""
    adv_S = torch.zeros(num_seqs, device=advantages_B.device).index_copy(0, seq_B, advantages_B)
    if not torch.allclose(adv_S[seq_B], advantages_B):
        raise ValueError("advantages_B differ between rows of the same sequence (sequence_index_B).")
    return adv_S


def _mean_or_zero(values: Tensor, anchor: Tensor) -> Tensor:
    """Mean of `values`, or a zero still connected to `anchor`'s graph when there are none."""
    return values.mean() if values.numel() else (anchor * 0.0).sum()


_UNIT_KEYS = ("ratio_mean", "ratio_min", "ratio_max", "clip_frac_low", "clip_frac_high")


def _stats(units: tuple[Tensor, Tensor, Tensor], weights: Tensor | None, terms: dict[str, Tensor],
           tokens_S: Tensor, valid_S: Tensor) -> dict[str, float]:
    """Floats for logging, read back from the device in one transfer."""
    anchor = terms["loss_total"]
    ratio, low, high = (u.detach().float() for u in units)
    if ratio.numel():
        values = dict(zip(_UNIT_KEYS, [ratio.mean(), ratio.min(), ratio.max(), low.mean(), high.mean()]))
    else:
        one, zero = anchor.new_ones(()), anchor.new_zeros(())
        values = dict(zip(_UNIT_KEYS, [one, one, one, zero, zero]))
    if weights is not None:
        w = weights.detach().float() if weights.numel() else anchor.new_ones(1)
        values.update(importance_weight_mean=w.mean(), importance_weight_min=w.min(), importance_weight_max=w.max())
    values.update({k: v.detach() for k, v in terms.items()})
    values.update(num_tokens=tokens_S.sum(), num_sequences=valid_S.sum().float())
    floats = torch.stack([v.float() for v in values.values()]).tolist()
    return dict(zip(values, floats))


def _check_inputs(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            f"logprobs, old_logprobs and mask must all be [B, T]; got {tuple(logprobs.shape)}, "
            f"{tuple(old_logprobs.shape)}, {tuple(mask.shape)}"
        )
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B]={logprobs.shape[0]}, got {tuple(advantages.shape)}")
