"""Policy-gradient losses for GSPO, GSPO-token and GRPO, as one pure function over tensors.

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

Reference KL (optional, beta > 0): the k3 estimator exp(ref - logp) - (ref - logp) - 1 per
sampled token, aggregated like the policy term (token mean per sequence, then mean over
sequences), so every sequence weighs the same in both terms.

    loss = -J + beta * KL

Simplifications: advantages are per sequence (A_i,t = A_i); sequences without sampled tokens
are ignored; the loss is computed in float32.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["LOSS_TYPES", "LossType", "policy_loss", "k3_kl"]

LossType = Literal["gspo", "grpo", "gspo_token"]
LOSS_TYPES: tuple[str, ...] = ("gspo", "grpo", "gspo_token")


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
) -> tuple[Tensor, dict[str, float]]:
    """Clipped policy-gradient loss (to minimise) and statistics.

    Args:
        logprobs_B_T: log pi_theta of the sampled tokens; the only input that gets gradient.
        old_logprobs_B_T: log pi_old of the same tokens (the sampler's or a frozen forward).
        advantages_B: advantage of each row's sequence (equal across rows of one sequence).
        mask_B_T: 1 for sampled tokens, 0 for prompt/tool/padding tokens (any values there are ignored).
        loss_type: "gspo" (sequence ratio), "gspo_token" or "grpo" (token ratio).
        clip_epsilon_low / clip_epsilon_high: ratio clipped to [1 - low, 1 + high].
        sequence_index_B: int ids mapping rows to sequences; None = one sequence per row.
        ref_logprobs_B_T: log pi_ref for the KL term (needed when kl_beta > 0).
        kl_beta: coefficient of the k3 reference KL.

    Returns:
        (loss [], stats) with stats as floats:
        - ratio_mean / ratio_min / ratio_max: over sequences (gspo, gspo_token) or tokens (grpo);
        - clip_frac_low: fraction of those units where the low clip is active *and changes the
          gradient*: ratio < 1 - eps_low with A < 0; clip_frac_high: ratio > 1 + eps_high with A > 0;
        - kl: the k3 estimate (0 without reference logprobs); policy_objective: J;
        - num_tokens, num_sequences: sampled tokens and non-empty sequences.
    """
    _check_inputs(logprobs_B_T, old_logprobs_B_T, advantages_B, mask_B_T, loss_type)
    if clip_epsilon_low < 0 or clip_epsilon_high < 0:
        raise ValueError(f"clip epsilons must be >= 0, got low={clip_epsilon_low}, high={clip_epsilon_high}")
    if kl_beta and ref_logprobs_B_T is None:
        raise ValueError("kl_beta > 0 needs ref_logprobs_B_T (log-probs under the reference policy).")
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

    if loss_type == "grpo":
        ratio_B_T = torch.exp(log_ratio_B_T)
        obj_B_T, low_B_T, high_B_T = _clipped_objective(ratio_B_T, adv_S[seq_B, None], *eps)
        objective_S = seq_mean(obj_B_T)
        units = (ratio_B_T[sampled_B_T], low_B_T[sampled_B_T], high_B_T[sampled_B_T])
    else:
        ratio_S = torch.exp(seq_mean(log_ratio_B_T))
        objective_S, low_S, high_S = _clipped_objective(ratio_S, adv_S, *eps)
        if loss_type == "gspo_token":
            token_ratio_B_T = ratio_S.detach()[seq_B, None] * torch.exp(logp_B_T - logp_B_T.detach())
            objective_S = seq_mean(_clipped_objective(token_ratio_B_T, adv_S[seq_B, None], *eps)[0])
        units = (ratio_S[valid_S], low_S[valid_S], high_S[valid_S])

    objective = _mean_or_zero(objective_S[valid_S], logp_B_T)
    kl = logp_B_T.new_zeros(())
    if ref_logprobs_B_T is not None:
        ref_B_T = torch.where(sampled_B_T, ref_logprobs_B_T.detach().float(), 0.0)
        kl = _mean_or_zero(seq_mean(k3_kl(logp_B_T, ref_B_T))[valid_S], logp_B_T)
    loss = -objective + kl_beta * kl
    return loss, _stats(units, objective, kl, tokens_S, valid_S)


def k3_kl(logprobs_B_T: Tensor, ref_logprobs_B_T: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 >= 0. [B, T]."""
    delta_B_T = ref_logprobs_B_T - logprobs_B_T
    return torch.exp(delta_B_T) - delta_B_T - 1.0


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


_STAT_KEYS = ("ratio_mean", "ratio_min", "ratio_max", "clip_frac_low", "clip_frac_high")


def _stats(
    units: tuple[Tensor, Tensor, Tensor], objective: Tensor, kl: Tensor, tokens_S: Tensor, valid_S: Tensor
) -> dict[str, float]:
    """Floats for logging, read back from the device in one transfer."""
    ratio, low, high = (u.detach().float() for u in units)
    if ratio.numel():
        unit_stats = [ratio.mean(), ratio.min(), ratio.max(), low.mean(), high.mean()]
    else:
        one, zero = objective.new_ones(()), objective.new_zeros(())
        unit_stats = [one, one, one, zero, zero]
    tail = [kl.detach(), objective.detach(), tokens_S.sum(), valid_S.sum().float()]
    values = torch.stack([v.float() for v in unit_stats + tail]).tolist()
    return dict(zip(_STAT_KEYS + ("kl", "policy_objective", "num_tokens", "num_sequences"), values))


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
