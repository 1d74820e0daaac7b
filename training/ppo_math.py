"""The arithmetic of PPO for language models, as small pure functions on tensors.

Shapes: B rows (one rollout each), T response tokens. ``mask`` [B, T] is 1 on the tokens a
policy generated and 0 on padding after the end of a response; every mask row is a prefix of
ones, because responses are right-padded.

    rewards_t   = -kl_coeff * KL_t                      (+ score on the last response token)
    delta_t     = rewards_t + gamma * V_{t+1} - V_t     (V after the last token = 0: terminal)
    A_t         = delta_t + gamma * lam * A_{t+1}       (GAE, Schulman et al. 2015)
    returns_t   = A_t + V_t
    L_policy    = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))
    L_value     = 0.5 * mean_t max((V_t - R_t)^2, (clip(V_t, V_old +- eps_v) - R_t)^2)

Nothing here touches a model; each function is checked against values worked out by hand in
tests/training/test_ppo_math.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


# --- masked statistics -------------------------------------------------------------------


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over all elements, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the masked elements; ``unbiased`` applies Bessel's n / (n - 1)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError("masked_var(unbiased=True) needs at least two unmasked elements")
        variance = variance * n / (n - 1)
    return variance


def masked_whiten(
    values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> Tensor:
    """(values - mean) / std over the masked elements; masked-out positions become 0.

    With ``shift_mean=False`` the mean is added back (scale only), as PPO does for rewards.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


# --- token log-probabilities -------------------------------------------------------------


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log p(label) per position. logits [B, T, V], labels [B, T] -> [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of each position's distribution. logits [B, T, V] -> [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_from_logits(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Exact KL(p || p_ref) of each position's next-token distributions. [B, T, V] -> [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


# --- KL penalty ----------------------------------------------------------------------------


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) on tokens sampled from the policy.

    With log r = log p_ref(x) - log p(x) (Schulman, "Approximating KL divergence", 2020):
    k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2 (low variance, biased),
    k3 = (r - 1) - log r (unbiased and >= 0).
    """
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}: use 'k1', 'k2' or 'k3'")


def kl_penalized_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coeff: float,
    kind: KLEstimator = "k1",
) -> tuple[Tensor, Tensor]:
    """Per-token rewards: -kl_coeff * KL_t everywhere, plus the sequence score on the last
    response token. scores [B]; the others [B, T]. Returns (rewards [B, T], kl [B, T])."""
    kl = kl_estimate(logprobs, ref_logprobs, kind) * mask
    rewards = -kl_coeff * kl
    last = last_index(mask)  # [B]
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def last_index(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of a prefix mask [B, T] -> [B] (0 for an empty row)."""
    return (mask.sum(-1).long() - 1).clamp(min=0)


# --- advantages ----------------------------------------------------------------------------


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and returns. All [B, T]; returns (advantages, returns).

    The state after a row's last response token is terminal (value 0), so padding never leaks
    into the estimates.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        next_advantage, next_value = advantage, values[:, t]
    return advantages, (advantages + values) * mask


# --- clipped objectives --------------------------------------------------------------------


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate. All [B, T]. Returns (loss, clip fraction, approx KL old->new)."""
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_clipped - R)^2). Returns (loss, clip fraction)."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac.detach()


# --- KL coefficient ------------------------------------------------------------------------


@dataclass
class FixedKLController:
    """A constant ``kl_coeff``."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (2019): move ``value`` so the observed KL tracks ``target``.

    value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon
    """

    value: float
    target: float
    horizon: int

    def __post_init__(self) -> None:
        if self.target <= 0 or self.horizon <= 0:
            raise ValueError("adaptive KL needs target > 0 and horizon > 0 (e.g. 6.0 and 10000)")

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
