"""The whole objective (training/losses.py) against hand computations (values worked out in the comments):
the policy term, the reference and LwF teacher KL terms, and the importance-weight correction."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stateset_agents.training.losses import k3_kl, policy_loss, sequence_kl

E = math.e


def _inputs(log_ratios, advantages, mask=None):
    """logprobs = old + log_ratios, with old = log(0.5) everywhere; logprobs is a leaf needing grad."""
    log_ratio = torch.tensor(log_ratios, dtype=torch.float32)
    old = torch.full_like(log_ratio, math.log(0.5))
    logprobs = (old + log_ratio).requires_grad_()
    mask = torch.ones_like(log_ratio) if mask is None else torch.tensor(mask, dtype=torch.float32)
    return logprobs, old, torch.tensor(advantages, dtype=torch.float32), mask


def test_gspo_high_clip_with_positive_advantage():
    # mean log-ratio 1 -> s = e; clip(e, 0.8, 1.2) = 1.2; min(e*1, 1.2*1) = 1.2 -> loss -1.2, no gradient.
    logprobs, old, adv, mask = _inputs([[1.0, 1.0]], [1.0])
    loss, stats = policy_loss(logprobs, old, adv, mask, clip_epsilon_low=0.2, clip_epsilon_high=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert stats["ratio_mean"] == pytest.approx(E, rel=1e-6)
    assert (stats["clip_frac_high"], stats["clip_frac_low"]) == (1.0, 0.0)
    loss.backward()
    assert torch.all(logprobs.grad == 0)


def test_gspo_high_ratio_with_negative_advantage_is_not_clipped():
    # s = e, A = -1: min(-e, -1.2) = -e -> loss e. d loss / d logp_t = -A * s / |y| = e / 2.
    logprobs, old, adv, mask = _inputs([[1.0, 1.0]], [-1.0])
    loss, stats = policy_loss(logprobs, old, adv, mask, clip_epsilon_low=0.2, clip_epsilon_high=0.2)
    assert loss.item() == pytest.approx(E, rel=1e-6)
    assert stats["clip_frac_high"] == 0.0 and stats["clip_frac_low"] == 0.0
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.full((1, 2), E / 2))


def test_gspo_low_clip_both_advantage_signs():
    # Row 0: s = e^-1 = 0.3679, A = -1: min(-0.3679, -0.8) = -0.8 (low clip active).
    # Row 1: s = e^-1, A = +1: min(0.3679, 0.8) = 0.3679 (not clipped).
    # loss = -mean(-0.8, 0.3679) = 0.2161
    logprobs, old, adv, mask = _inputs([[-1.0, -1.0], [-1.0, -1.0]], [-1.0, 1.0])
    loss, stats = policy_loss(logprobs, old, adv, mask, clip_epsilon_low=0.2, clip_epsilon_high=0.2)
    assert loss.item() == pytest.approx(-(-0.8 + math.exp(-1)) / 2, rel=1e-6)
    assert stats["clip_frac_low"] == 0.5 and stats["clip_frac_high"] == 0.0
    loss.backward()
    assert torch.all(logprobs.grad[0] == 0)  # clipped row gives no gradient
    # row 1: d/d logp_t of -(1/2) * s = -(1/2) * s / 2
    torch.testing.assert_close(logprobs.grad[1], torch.full((2,), -math.exp(-1) / 4))


def test_gspo_uses_the_length_normalised_sequence_ratio():
    # log-ratios [0.3, -0.1, 0.4] -> mean 0.2 -> s = e^0.2 = 1.2214, A = 2, no clip (eps 0.5)
    # loss = -2 * 1.2214 = -2.4428
    logprobs, old, adv, mask = _inputs([[0.3, -0.1, 0.4]], [2.0])
    loss, _ = policy_loss(logprobs, old, adv, mask, clip_epsilon_low=0.5, clip_epsilon_high=0.5)
    assert loss.item() == pytest.approx(-2 * math.exp(0.2), rel=1e-6)


def test_grpo_clips_per_token():
    # token ratios e and e^-1 with A = 1, eps 0.2: min(e, 1.2) = 1.2 (high clip), min(0.3679, 0.8) = 0.3679
    # per-sequence mean (1.2 + 0.3679) / 2 = 0.78394 -> loss -0.78394; 1 of 2 tokens high-clipped.
    logprobs, old, adv, mask = _inputs([[1.0, -1.0]], [1.0])
    loss, stats = policy_loss(logprobs, old, adv, mask, loss_type="grpo", clip_epsilon_low=0.2, clip_epsilon_high=0.2)
    assert loss.item() == pytest.approx(-(1.2 + math.exp(-1)) / 2, rel=1e-6)
    assert stats["clip_frac_high"] == 0.5 and stats["clip_frac_low"] == 0.0
    assert stats["ratio_max"] == pytest.approx(E, rel=1e-6)
    loss.backward()
    # clipped token: 0; other: -(1/2) * ratio = -0.3679 / 2
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -math.exp(-1) / 2]]))


def test_grpo_averages_tokens_within_a_sequence_then_sequences():
    # row 0: one token, ratio 1, A=1 -> 1; row 1: three tokens, ratio 1, A=-1 -> -1. mean = 0 -> loss 0.
    logprobs, old, adv, mask = _inputs([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [1.0, -1.0], [[1, 0, 0], [1, 1, 1]])
    loss, stats = policy_loss(logprobs, old, adv, mask, loss_type="grpo")
    assert loss.item() == pytest.approx(0.0)
    assert stats["num_tokens"] == 4 and stats["num_sequences"] == 2


@pytest.mark.parametrize("loss_type", ["gspo", "gspo_token", "grpo"])
def test_ratio_is_one_when_policies_match(loss_type):
    # ratio 1 -> objective = A -> loss = -mean(A) = -(0.5 - 1.5) / 2 = 0.5
    logprobs, old, adv, mask = _inputs([[0.0, 0.0], [0.0, 0.0]], [0.5, -1.5])
    loss, stats = policy_loss(logprobs, old, adv, mask, loss_type=loss_type)
    assert loss.item() == pytest.approx(0.5)
    assert stats["ratio_mean"] == stats["ratio_min"] == stats["ratio_max"] == 1.0


@pytest.mark.parametrize("loss_type", ["gspo", "gspo_token", "grpo"])
def test_masked_tokens_change_nothing(loss_type):
    mask = [[1, 1, 0, 0], [0, 1, 1, 1]]
    logprobs, old, adv, mask_t = _inputs([[0.1, -0.2, 0.0, 0.0], [0.0, 0.3, 0.1, -0.1]], [1.0, -0.5], mask)
    loss, _ = policy_loss(logprobs, old, adv, mask_t, loss_type=loss_type)
    loss.backward()

    garbage = torch.tensor([[0.0, 0.0, float("nan"), -float("inf")], [5.0, 0.0, 0.0, 0.0]])
    keep = mask_t.bool()
    logprobs2 = torch.where(keep, logprobs.detach(), garbage).requires_grad_()
    old2 = torch.where(keep, old, garbage * -3)
    loss2, _ = policy_loss(logprobs2, old2, adv, mask_t, loss_type=loss_type, ref_logprobs_B_T=old2, kl_beta=0.0)
    loss2.backward()
    assert loss2.item() == pytest.approx(loss.item())
    torch.testing.assert_close(logprobs2.grad, logprobs.grad)
    assert torch.all(logprobs.grad[~keep] == 0)


def test_gradient_flows_only_through_logprobs():
    logprobs, old, adv, mask = _inputs([[0.2, -0.1]], [1.0])
    old.requires_grad_()
    adv.requires_grad_()
    ref = torch.zeros_like(old).requires_grad_()
    loss, _ = policy_loss(logprobs, old, adv, mask, ref_logprobs_B_T=ref, kl_beta=0.1)
    loss.backward()
    assert logprobs.grad is not None and logprobs.grad.abs().sum() > 0
    assert old.grad is None and adv.grad is None and ref.grad is None


@pytest.mark.parametrize("loss_type", ["gspo", "gspo_token", "grpo"])
def test_sequence_index_pools_rows_like_one_concatenated_sequence(loss_type):
    # Episode 0 = turn rows 0 and 2 (tokens a,b | c); episode 1 = row 1. Concatenated: [a, b, c].
    split = [[0.4, -0.2, 0.0], [0.1, 0.3, 0.0], [0.9, 0.0, 0.0]]
    split_mask = [[1, 1, 0], [1, 1, 0], [1, 0, 0]]
    logprobs, old, adv, mask = _inputs(split, [0.7, -1.0, 0.7], split_mask)
    loss, stats = policy_loss(
        logprobs, old, adv, mask, loss_type=loss_type, sequence_index_B=torch.tensor([5, 9, 5]),
        clip_epsilon_low=0.1, clip_epsilon_high=0.1,
    )  # fmt: skip
    loss.backward()

    joined, joined_mask = [[0.4, -0.2, 0.9], [0.1, 0.3, 0.0]], [[1, 1, 1], [1, 1, 0]]
    logprobs_c, old_c, adv_c, mask_c = _inputs(joined, [0.7, -1.0], joined_mask)
    loss_c, stats_c = policy_loss(
        logprobs_c, old_c, adv_c, mask_c, loss_type=loss_type, clip_epsilon_low=0.1, clip_epsilon_high=0.1
    )
    loss_c.backward()
    assert loss.item() == pytest.approx(loss_c.item(), rel=1e-6)
    assert stats == pytest.approx(stats_c)
    grads = logprobs.grad
    torch.testing.assert_close(torch.cat([grads[0, :2], grads[2, :1]]), logprobs_c.grad[0])
    torch.testing.assert_close(grads[1, :2], logprobs_c.grad[1, :2])
    # Without the index, the two turns would be two sequences: a different loss.
    loss_rows, _ = policy_loss(logprobs, old, adv, mask, loss_type=loss_type, clip_epsilon_low=0.1, clip_epsilon_high=0.1)
    assert loss_rows.item() != pytest.approx(loss.item(), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    eps=st.floats(1e-4, 0.5),
)
def test_gspo_token_matches_gspo_value_and_gradient(seed, eps):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(3, 5, generator=generator) * 3
    logprobs = (old + torch.randn(3, 5, generator=generator) * 0.2).requires_grad_()
    logprobs_tok = logprobs.detach().clone().requires_grad_()
    adv = torch.randn(3, generator=generator)
    mask = (torch.rand(3, 5, generator=generator) > 0.3).float()
    kwargs = dict(clip_epsilon_low=eps, clip_epsilon_high=eps * 1.5)
    loss, stats = policy_loss(logprobs, old, adv, mask, loss_type="gspo", **kwargs)
    loss_tok, stats_tok = policy_loss(logprobs_tok, old, adv, mask, loss_type="gspo_token", **kwargs)
    (loss + loss_tok).backward()
    assert loss_tok.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(logprobs_tok.grad, logprobs.grad, rtol=1e-5, atol=1e-6)
    assert stats_tok["clip_frac_high"] == stats["clip_frac_high"]


def test_k3_kl_by_hand_and_in_the_loss():
    # pi = 1 (logp 0), ref = 0.5: delta = log 0.5 = -0.6931; k3 = 0.5 + 0.6931 - 1 = 0.19315
    assert k3_kl(torch.tensor([0.0]), torch.tensor([math.log(0.5)])).item() == pytest.approx(0.5 + math.log(2) - 1)
    logprobs = torch.zeros(1, 2, requires_grad=True)
    ref = torch.full((1, 2), math.log(0.5))
    # ratio 1 and A = 0: loss = 0.1 * 0.19315
    loss, stats = policy_loss(logprobs, logprobs.detach(), torch.zeros(1), torch.ones(1, 2), ref_logprobs_B_T=ref, kl_beta=0.1)
    assert loss.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1), rel=1e-6)
    assert stats["kl"] == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    # identical policies: KL 0
    _, stats = policy_loss(logprobs, logprobs.detach(), torch.zeros(1), torch.ones(1, 2), ref_logprobs_B_T=logprobs.detach())
    assert stats["kl"] == pytest.approx(0.0)


def test_all_masked_batch_gives_a_zero_loss_with_a_graph():
    logprobs, old, adv, _ = _inputs([[0.5, 0.5]], [1.0])
    loss, stats = policy_loss(logprobs, old, adv, torch.zeros(1, 2))
    loss.backward()
    assert loss.item() == 0.0 and stats["num_tokens"] == 0 and stats["ratio_mean"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(loss_type="ppo"), "loss_type must be one of"),
        (dict(clip_epsilon_low=-0.1), "clip epsilons must be >= 0"),
        (dict(kl_beta=0.1), "needs ref_logprobs_B_T"),
        (dict(sequence_index_B=torch.tensor([0, 0])), "differ between rows of the same sequence"),
        (dict(sequence_index_B=torch.tensor([0])), r"sequence_index_B must have shape \[2\]"),
    ],
)
def test_bad_inputs_raise_clearly(kwargs, message):
    logprobs, old, adv, mask = _inputs([[0.0], [0.0]], [1.0, -1.0])
    with pytest.raises(ValueError, match=message):
        policy_loss(logprobs, old, adv, mask, **kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"must all be \[B, T\]"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))


# ----------------------------------------------------------------------------- LwF teacher KL


def test_teacher_kl_is_zero_when_equal_and_positive_otherwise():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.7, -3.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert sequence_kl(logp, logp.detach().clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    # masked positions do not count, whatever their values
    garbage = logp.detach().clone()
    garbage[0, 2], garbage[1, 0] = 5.0, -9.0
    assert sequence_kl(logp, garbage, mask).item() == pytest.approx(0.0, abs=1e-7)
    teacher = logp.detach().clone()
    teacher[0, 0] = -2.0  # d = teacher - logp = -1 on one of row 0's two tokens
    # k3 = e^-1 + 1 - 1 = 0.36788; row 0 mean 0.18394, row 1 mean 0; sequences -> 0.09197
    kl = sequence_kl(logp, teacher, mask)
    assert kl.item() == pytest.approx(math.exp(-1) / 4, rel=1e-5)
    kl.backward()
    assert logp.grad[0, 0] != 0 and logp.grad[1, 0] == 0
    # rows 0 and 1 as one sequence (2 + 3 sampled tokens pooled): e^-1 / 5, not the row-wise e^-1 / 4
    full = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = sequence_kl(logp.detach(), teacher, full, sequence_index_B=torch.tensor([4, 4]))
    assert pooled.item() == pytest.approx(math.exp(-1) / 5, rel=1e-5)


def test_teacher_kl_term_in_the_loss_and_its_gradient():
    # ratio 1, A = 0: the policy term is 0. teacher logp = log 0.5 on both tokens, logp = 0:
    # k3 = 0.5 + log 2 - 1 = 0.19315 per token -> KL_teacher 0.19315; loss = 0.5 * 0.19315.
    # d k3 / d logp = 1 - exp(t - logp) = 0.5 per token; token mean -> 0.25; times beta 0.5 -> 0.125.
    logprobs = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.full((1, 2), math.log(0.5))
    loss, stats = policy_loss(logprobs, logprobs.detach(), torch.zeros(1), torch.ones(1, 2),
                              teacher_logprobs_B_T=teacher, teacher_kl_beta=0.5)
    k3 = 0.5 + math.log(2) - 1
    assert loss.item() == pytest.approx(0.5 * k3, rel=1e-6)
    assert stats["kl_teacher"] == pytest.approx(k3, rel=1e-6)
    assert stats["loss_kl_teacher"] == pytest.approx(0.5 * k3, rel=1e-6) and "kl" not in stats
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.full((1, 2), 0.125))


def test_teacher_kl_on_marked_rows_only():
    """teacher_rows_B (LwF on replayed episodes only): unmarked rows add KL 0 and no gradient, whatever their
    teacher values, and still count in the mean over sequences."""
    logprobs = torch.zeros(2, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(0.5)] * 2, [-50.0] * 2])  # row 1's values must not matter
    loss, stats = policy_loss(logprobs, logprobs.detach(), torch.zeros(2), torch.ones(2, 2),
                              teacher_logprobs_B_T=teacher, teacher_kl_beta=0.5,
                              teacher_rows_B=torch.tensor([True, False]))
    k3 = 0.5 + math.log(2) - 1
    assert stats["kl_teacher"] == pytest.approx(k3 / 2, rel=1e-6)  # row 0's k3, averaged over 2 sequences
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0625, 0.0625], [0.0, 0.0]]))
    none_marked = policy_loss(logprobs.detach(), logprobs.detach(), torch.zeros(2), torch.ones(2, 2),
                              teacher_logprobs_B_T=teacher, teacher_kl_beta=0.5,
                              teacher_rows_B=torch.tensor([False, False]))[1]
    assert none_marked["kl_teacher"] == 0.0


def test_forward_teacher_kl_by_hand_and_its_bounded_gradient():
    """teacher_kl_direction="forward": KL(teacher || pi) by k3 with the roles swapped. Token 0: the student made the
    teacher's token e^-6 times as likely (logp = t - 6); token 1: equal. Forward k3 per token =
    exp(logp - t) - (logp - t) - 1 = e^-6 + 5 on token 0, 0 on token 1 -> KL (e^-6 + 5) / 2. Its gradient in logp is
    exp(logp - t) - 1 = e^-6 - 1 (bounded by 1) on token 0 -> / 2 tokens x beta 0.5; the reverse k3's there is
    1 - e^6 (about -402), so the forward term is what a spike of the reverse one becomes."""
    teacher = torch.full((1, 2), math.log(0.5))
    logprobs = (teacher + torch.tensor([[-6.0, 0.0]])).requires_grad_()
    loss, stats = policy_loss(logprobs, logprobs.detach(), torch.zeros(1), torch.ones(1, 2),
                              teacher_logprobs_B_T=teacher, teacher_kl_beta=0.5, teacher_kl_direction="forward")
    assert stats["kl_teacher"] == pytest.approx((math.exp(-6) + 5) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.5 * (math.exp(-6) + 5) / 2, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.25 * (math.exp(-6) - 1), 0.0]]))
    reverse = logprobs.detach().clone().requires_grad_()
    policy_loss(reverse, reverse.detach(), torch.zeros(1), torch.ones(1, 2), teacher_logprobs_B_T=teacher,
                teacher_kl_beta=0.5)[0].backward()
    assert reverse.grad[0, 0].item() == pytest.approx(0.25 * (1 - math.exp(6)), rel=1e-5)
    # unmarked rows stay at 0 and without gradient in this direction too
    other = logprobs.detach().clone().requires_grad_()
    _, unmarked = policy_loss(other, other.detach(), torch.zeros(1), torch.ones(1, 2), teacher_logprobs_B_T=teacher,
                              teacher_kl_beta=0.5, teacher_rows_B=torch.tensor([False]), teacher_kl_direction="forward")
    assert unmarked["kl_teacher"] == 0.0
    with pytest.raises(ValueError, match="teacher_kl_direction"):
        policy_loss(other, other.detach(), torch.zeros(1), torch.ones(1, 2), teacher_logprobs_B_T=teacher,
                    teacher_kl_beta=0.5, teacher_kl_direction="backward")


def test_the_loss_is_the_sum_of_its_logged_terms():
    # policy: s = e^0.2 (no clip, eps 0.5), A = 1 -> -1.2214; ref KL: beta 0.1; teacher KL: beta 0.3
    logprobs, old, adv, mask = _inputs([[0.2, 0.2]], [1.0])
    ref, teacher = old - 0.3, old + 0.1
    loss, stats = policy_loss(logprobs, old, adv, mask, clip_epsilon_low=0.5, clip_epsilon_high=0.5,
                              ref_logprobs_B_T=ref, kl_beta=0.1, teacher_logprobs_B_T=teacher, teacher_kl_beta=0.3)
    k3 = lambda d: math.exp(d) - d - 1  # noqa: E731  (d = other - logp)
    assert stats["loss_policy"] == pytest.approx(-math.exp(0.2), rel=1e-6)
    assert stats["kl"] == pytest.approx(k3(-0.5), rel=1e-5) and stats["kl_teacher"] == pytest.approx(k3(-0.1), rel=1e-5)
    assert stats["loss_kl_ref"] == pytest.approx(0.1 * k3(-0.5), rel=1e-5)
    assert stats["loss_kl_teacher"] == pytest.approx(0.3 * k3(-0.1), rel=1e-5)
    parts = stats["loss_policy"] + stats["loss_kl_ref"] + stats["loss_kl_teacher"]
    assert stats["loss_total"] == pytest.approx(loss.item(), rel=1e-6) == pytest.approx(parts, rel=1e-6)


# ----------------------------------------------------------------------------- importance-weight correction


def test_gspo_importance_weight_is_the_truncated_sequence_ratio_of_old_to_sampler():
    # pi_theta = pi_old (s = 1), A = 1. log(pi_old / mu) per token [0.2, 0.4] -> mean 0.3 -> w = e^0.3 = 1.34986
    # (cap 2). J = w * s * A -> loss -1.34986; d/d logp_t of -w * s / |y| = -w / 2 (w is detached).
    logprobs, old, adv, mask = _inputs([[0.0, 0.0]], [1.0])
    sampler = old - torch.tensor([[0.2, 0.4]])
    loss, stats = policy_loss(logprobs, old, adv, mask, sampler_logprobs_B_T=sampler)
    assert loss.item() == pytest.approx(-math.exp(0.3), rel=1e-6)
    assert stats["importance_weight_mean"] == pytest.approx(math.exp(0.3), rel=1e-6)
    assert stats["ratio_mean"] == 1.0  # the weight is not part of the clipped ratio
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.full((1, 2), -math.exp(0.3) / 2))
    # mean log-ratio 1.0 -> e = 2.718 > cap 2: truncated to 2
    loss, stats = policy_loss(logprobs, old, adv, mask, sampler_logprobs_B_T=old - 1.0, importance_weight_cap=2.0)
    assert loss.item() == pytest.approx(-2.0) and stats["importance_weight_max"] == 2.0


def test_grpo_importance_weight_is_per_token():
    # ratio 1, A = 1; log(pi_old / mu) = [0.2, 1.0] -> w = [e^0.2, min(e, 2) = 2]; token mean -> loss -(1.2214 + 2) / 2
    logprobs, old, adv, mask = _inputs([[0.0, 0.0]], [1.0])
    loss, stats = policy_loss(logprobs, old, adv, mask, loss_type="grpo",
                              sampler_logprobs_B_T=old - torch.tensor([[0.2, 1.0]]))
    assert loss.item() == pytest.approx(-(math.exp(0.2) + 2.0) / 2, rel=1e-6)
    assert (stats["importance_weight_min"], stats["importance_weight_max"]) == (pytest.approx(math.exp(0.2)), 2.0)


@pytest.mark.parametrize("loss_type", ["gspo", "gspo_token", "grpo"])
def test_sampler_equal_to_old_changes_nothing(loss_type):
    logprobs, old, adv, mask = _inputs([[0.1, -0.3, 0.0], [0.2, 0.1, 0.4]], [1.0, -0.5], [[1, 1, 0], [1, 1, 1]])
    loss, stats = policy_loss(logprobs, old, adv, mask, loss_type=loss_type)
    loss.backward()
    corrected = logprobs.detach().clone().requires_grad_()
    loss_w, stats_w = policy_loss(corrected, old, adv, mask, loss_type=loss_type, sampler_logprobs_B_T=old.clone())
    loss_w.backward()
    assert loss_w.item() == loss.item()
    torch.testing.assert_close(corrected.grad, logprobs.grad, rtol=0, atol=0)
    assert stats_w["importance_weight_min"] == stats_w["importance_weight_max"] == 1.0
    assert "importance_weight_mean" not in stats  # off by default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(teacher_kl_beta=0.1), "needs teacher_logprobs_B_T"),
        (dict(importance_weight_cap=0.0), "importance_weight_cap must be > 0"),
        (dict(sampler_logprobs_B_T=torch.zeros(2, 2)), r"sampler_logprobs_B_T must be \[B, T\]"),
    ],
)
def test_bad_term_inputs_raise_clearly(kwargs, message):
    logprobs, old, adv, mask = _inputs([[0.0], [0.0]], [1.0, -1.0])
    with pytest.raises(ValueError, match=message):
        policy_loss(logprobs, old, adv, mask, **kwargs)
