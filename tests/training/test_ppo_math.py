"""PPO arithmetic against values worked out by hand (the comments show the working)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from training.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_estimate,
    kl_from_logits,
    kl_penalized_rewards,
    last_index,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    value_loss,
)

T = torch.tensor


def test_masked_mean_ignores_padding() -> None:
    values = T([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])
    mask = T([[1, 1, 1, 0], [1, 0, 0, 0]])
    # (1 + 2 + 3 + 4) / 4
    assert_close(masked_mean(values, mask), T(2.5))
    # per row: (1 + 2 + 3) / 3 and 4 / 1
    assert_close(masked_mean(values, mask, dim=1), T([2.0, 4.0]))


def test_masked_var_biased_and_unbiased() -> None:
    values = T([[1.0, 2.0, 3.0, 50.0]])
    mask = T([[1, 1, 1, 0]])
    # mean 2; squared deviations 1, 0, 1 -> biased 2/3, unbiased 2/2
    assert_close(masked_var(values, mask, unbiased=False), T(2.0 / 3.0))
    assert_close(masked_var(values, mask), T(1.0))


def test_masked_var_unbiased_needs_two_elements() -> None:
    with pytest.raises(ValueError, match="at least two"):
        masked_var(T([[1.0, 2.0]]), T([[1, 0]]))


def test_masked_whiten() -> None:
    values = T([[1.0, 2.0, 3.0, 50.0]])
    mask = T([[1, 1, 1, 0]])
    # mean 2, unbiased std 1: (x - 2) / 1; the padded slot becomes 0
    assert_close(masked_whiten(values, mask), T([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    # scale only: (x - 2) / 1 + 2
    assert_close(
        masked_whiten(values, mask, shift_mean=False), T([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6, rtol=0
    )


def test_logprobs_and_entropy_from_logits() -> None:
    # two equal logits: p = 1/2 each; entropy ln 2
    logits = T([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # second position: p = 3/4, 1/4
    labels = T([[1, 0]])
    assert_close(logprobs_from_logits(logits, labels), T([[math.log(0.5), math.log(0.75)]]))
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert_close(entropy_from_logits(logits), T([[math.log(2.0), h2]]))


def test_kl_from_logits() -> None:
    # p = (3/4, 1/4), q = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    p, q = T([[[math.log(3.0), 0.0]]]), T([[[0.0, 0.0]]])
    assert_close(kl_from_logits(p, q), T([[0.75 * math.log(1.5) + 0.25 * math.log(0.5)]]))
    assert_close(kl_from_logits(p, p), T([[0.0]]))


def test_kl_estimators() -> None:
    logp = T([math.log(0.5), math.log(0.25)])
    ref = T([math.log(0.25), math.log(0.25)])
    # log r = ref - logp = [-ln 2, 0]
    ln2 = math.log(2.0)
    assert_close(kl_estimate(logp, ref, "k1"), T([ln2, 0.0]))
    assert_close(kl_estimate(logp, ref, "k2"), T([0.5 * ln2**2, 0.0]))
    # k3 = (r - 1) - log r = (1/2 - 1) + ln 2
    assert_close(kl_estimate(logp, ref, "k3"), T([-0.5 + ln2, 0.0]))
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_last_index() -> None:
    assert last_index(T([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])).tolist() == [2, 0, 3]


def test_kl_penalized_rewards_puts_the_score_on_the_last_token() -> None:
    scores = T([2.0, -1.0])
    logp = T([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = T([[-1.5, -0.5, -1.0], [-1.0, -9.0, -9.0]])
    mask = T([[1, 1, 1], [1, 0, 0]])
    rewards, kl = kl_penalized_rewards(scores, logp, ref, mask, kl_coeff=0.1)
    # k1 = logp - ref: row 0 [0.5, -0.5, 0], row 1 [-1, (masked), (masked)]
    assert_close(kl, T([[0.5, -0.5, 0.0], [-1.0, 0.0, 0.0]]))
    # -0.1 * kl, + score at positions 2 (row 0) and 0 (row 1)
    assert_close(rewards, T([[-0.05, 0.05, 2.0], [0.1 - 1.0, 0.0, 0.0]]))


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards = T([[0.0, 0.0, 1.0]])
    values = T([[0.5, 0.5, 0.5]])
    advantages, returns = gae(rewards, values, T([[1, 1, 1]]), gamma=1.0, lam=1.0)
    # reward-to-go is 1 at every step; A = 1 - 0.5
    assert_close(advantages, T([[0.5, 0.5, 0.5]]))
    assert_close(returns, T([[1.0, 1.0, 1.0]]))


def test_gae_discounted() -> None:
    rewards = T([[1.0, 0.0, 2.0]])
    values = T([[0.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, T([[1, 1, 1]]), gamma=0.5, lam=0.5)
    # delta2 = 2 + 0 - 0 = 2;  delta1 = 0 + 0.5*0 - 1 = -1;  delta0 = 1 + 0.5*1 - 0 = 1.5
    # A2 = 2;  A1 = -1 + 0.25*2 = -0.5;  A0 = 1.5 + 0.25*(-0.5) = 1.375
    assert_close(advantages, T([[1.375, -0.5, 2.0]]))
    assert_close(returns, T([[1.375, 0.5, 2.0]]))


def test_gae_treats_the_end_of_a_response_as_terminal() -> None:
    rewards = T([[1.0, 0.0, 2.0]])
    values = T([[0.0, 1.0, 7.0]])
    advantages, returns = gae(rewards, values, T([[1, 1, 0]]), gamma=0.5, lam=0.5)
    # position 2 is padding: V_3 := 0, so delta1 = 0 + 0 - 1 = -1, A1 = -1
    # delta0 = 1 + 0.5*1 - 0 = 1.5, A0 = 1.5 + 0.25*(-1) = 1.25
    assert_close(advantages, T([[1.25, -1.0, 0.0]]))
    assert_close(returns, T([[1.25, 0.0, 0.0]]))


def test_policy_loss_clips_the_ratio() -> None:
    old = T([[0.0, 0.0, 0.0]])
    new = T([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    adv = T([[1.0, -1.0, 2.0]])
    mask = T([[1, 1, 1]])
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 0: A=1,  r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped)
    # token 1: A=-1, r=0.5 -> max(0.5, 0.8) = 0.8 (clipped)
    # token 2: A=2,  r=1.1 -> max(-2.2, -2.2) = -2.2
    assert_close(loss, T((-1.2 + 0.8 - 2.2) / 3))
    assert_close(clipfrac, T(2 / 3))
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    assert_close(approx_kl, T(expected_kl))


def test_policy_loss_gradient_vanishes_outside_the_clip_range() -> None:
    new = T([[math.log(1.5)]], requires_grad=True)
    loss, _, _ = policy_loss(new, T([[0.0]]), T([[1.0]]), T([[1]]), cliprange=0.2)
    loss.backward()
    assert new.grad is not None and new.grad.abs().item() == 0.0


def test_value_loss_clips_around_the_old_values() -> None:
    values = T([[2.0, 0.5]])
    old = T([[1.0, 0.0]])
    returns = T([[3.0, 0.0]])
    loss, clipfrac = value_loss(values, old, returns, T([[1, 1]]), cliprange_value=0.2)
    # token 0: unclipped (2-3)^2 = 1; clipped V = 1.2, (1.2-3)^2 = 3.24 -> 3.24
    # token 1: unclipped 0.25; clipped V = 0.2 -> 0.04 -> 0.25
    assert_close(loss, T(0.5 * (3.24 + 0.25) / 2))
    assert_close(clipfrac, T(0.5))


def test_adaptive_kl_controller() -> None:
    controller = AdaptiveKLController(value=0.1, target=1.0, horizon=100)
    # kl twice the target: error clipped to +0.2 -> 0.1 * (1 + 0.2 * 10 / 100) = 0.102
    assert controller.update(current_kl=2.0, n_steps=10) == pytest.approx(0.102)
    # kl at 0.9 target: error -0.1 -> 0.102 * (1 - 0.1 * 50 / 100) = 0.0969
    assert controller.update(current_kl=0.9, n_steps=50) == pytest.approx(0.0969)
    assert FixedKLController(0.05).update(3.0, 10) == 0.05
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(value=0.1, target=0.0, horizon=100)
