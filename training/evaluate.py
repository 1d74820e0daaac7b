"""Evaluation on held-out data, all on the one shared base copy.

Metric names (the gates in gates.py read these):

    reward_accuracy     reward model: share of held-out pairs with r(chosen) > r(rejected)
    reward_margin       reward model: mean r(chosen) - r(rejected) on held-out pairs
    reward_base         mean reward of the base policy's responses (adapter disabled)
    reward_before       mean reward of the starting policy (base, or the parent it started from)
    reward_after        mean reward of the trained policy's responses
    reward_gain         reward_after - reward_before
    kl_to_base          KL(policy || base) per response: exact next-token KL summed over the
                        sampled response, averaged over prompts
    win_rate            share of prompts where the trained policy's response outscores the
                        previous version's (the parent), or the base's when there is no parent;
                        ties count one half
    response_length     mean response tokens (EOS included)
    margin_before/after DPO: mean log p(chosen) - log p(rejected) on held-out pairs
    margin_gain         margin_after - margin_before
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.batching import EncodedPair, Prompt, pad, pair_batch
from training.ppo_math import kl_from_logits
from training.rollout import Rollout, response_outputs, sample, score
from training.shared_base import POLICY, SharedBase


@dataclass(frozen=True)
class PolicySample:
    rollout: Rollout
    rewards: Tensor  # [B]


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def pair_scores(
    shared: SharedBase, pairs: Sequence[EncodedPair], adapter: str, batch_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Reward-model scores (chosen [N], rejected [N]) of encoded pairs under ``adapter``."""
    chosen, rejected = [], []
    pad_id = shared.tokenizer.pad_token_id
    with shared.adapter(adapter):
        for rows in _batches(pairs, batch_size):
            batch, _ = pair_batch(rows, pad_id)
            batch = batch.to(shared.model.device)
            c, r = shared.scores(batch.input_ids, batch.attention_mask).chunk(2)
            chosen.append(c)
            rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def pairwise_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> float:
    return (r_chosen > r_rejected).float().mean().item()


def reward_model_metrics(
    shared: SharedBase, pairs: Sequence[EncodedPair], adapter: str
) -> dict[str, float]:
    chosen, rejected = pair_scores(shared, pairs, adapter)
    return {
        "reward_accuracy": pairwise_accuracy(chosen, rejected),
        "reward_margin": (chosen - rejected).mean().item(),
    }


@torch.no_grad()
def pair_logprob_margins(
    shared: SharedBase, pairs: Sequence[EncodedPair], adapter: str | None, batch_size: int = 32
) -> Tensor:
    """log p(chosen) - log p(rejected) (completion tokens only) per pair under ``adapter``
    (None: the base). [N]."""
    margins = []
    pad_id = shared.tokenizer.pad_token_id
    with shared.adapter(adapter):
        for rows in _batches(pairs, batch_size):
            batch, _ = pair_batch(rows, pad_id)
            batch = batch.to(shared.model.device)
            logp = shared.sequence_logprobs(
                batch.input_ids, batch.attention_mask, batch.target_mask
            )
            c, r = logp.chunk(2)
            margins.append(c - r)
    return torch.cat(margins)


@torch.no_grad()
def sample_and_score(
    shared: SharedBase,
    prompts: Sequence[Prompt],
    policy: str | None,
    reward: str,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int = 32,
) -> PolicySample:
    """Responses from ``policy`` (None: the base) and their rewards, seeded."""
    rollouts, rewards = [], []
    for i, rows in enumerate(_batches(list(prompts), batch_size)):
        with shared.adapter(policy):
            rollout = sample(
                shared, [p.ids for p in rows], max_new_tokens, temperature, seed=seed + i
            )
        rollouts.append(rollout)
        rewards.append(score(shared, rollout, reward, [p.text for p in rows]))
    return PolicySample(_concat(rollouts, shared.tokenizer.pad_token_id), torch.cat(rewards))


def _concat(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts of different widths (re-pad queries left, responses right)."""
    queries = [q[m.bool()].tolist() for r in rollouts for q, m in zip(r.query, r.query_mask)]
    responses = [
        x[m.bool()].tolist() for r in rollouts for x, m in zip(r.response, r.response_mask)
    ]
    q, qm = pad(queries, pad_id, side="left")
    x, xm = pad(responses, pad_id, side="right")
    device = rollouts[0].query.device
    return Rollout(q.to(device), qm.to(device), x.to(device), xm.to(device))


@torch.no_grad()
def kl_to_base(
    shared: SharedBase, rollout: Rollout, policy: str, temperature: float = 1.0
) -> Tensor:
    """KL(policy || base) of each response: exact next-token KL summed over its tokens. [B]."""
    with shared.adapter(policy):
        logits = response_outputs(shared, rollout, temperature, with_logits=True)["logits"]
    with shared.adapter(None):
        ref_logits = response_outputs(shared, rollout, temperature, with_logits=True)["logits"]
    return (kl_from_logits(logits, ref_logits) * rollout.response_mask).sum(-1)


def win_rate(rewards: Tensor, other: Tensor) -> float:
    """Share of prompts where ``rewards`` beats ``other``; ties count one half."""
    wins = (rewards > other).float() + 0.5 * (rewards == other).float()
    return wins.mean().item()


def policy_metrics(
    shared: SharedBase,
    queries: Sequence[Prompt],
    *,
    reward: str | None,
    parent: str | None,
    started_from_parent: bool,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> dict[str, Any]:
    """Before/after mean reward, KL to the base, win rate and length of the trained policy.

    Every policy answers the same prompts with the same sampling seed. Without a reward
    adapter only the KL and the length are measured.
    """
    if reward is None:
        with shared.adapter(POLICY):
            rollout = _concat(
                [
                    sample(shared, [p.ids for p in rows], max_new_tokens, temperature, seed + i)
                    for i, rows in enumerate(_batches(list(queries), 32))
                ],
                shared.tokenizer.pad_token_id,
            )
        return {
            "kl_to_base": kl_to_base(shared, rollout, POLICY, temperature).mean().item(),
            "response_length": rollout.lengths.float().mean().item(),
            "eval_prompts": len(queries),
        }
    base = sample_and_score(shared, queries, None, reward, max_new_tokens, temperature, seed)
    after = sample_and_score(shared, queries, POLICY, reward, max_new_tokens, temperature, seed)
    metrics: dict[str, Any] = {
        "reward_base": base.rewards.mean().item(),
        "reward_after": after.rewards.mean().item(),
        "kl_to_base": kl_to_base(shared, after.rollout, POLICY, temperature).mean().item(),
        "response_length": after.rollout.lengths.float().mean().item(),
        "response_length_base": base.rollout.lengths.float().mean().item(),
        "eval_prompts": len(queries),
    }
    if parent is not None:
        previous = sample_and_score(
            shared, queries, parent, reward, max_new_tokens, temperature, seed
        )
        metrics["reward_parent"] = previous.rewards.mean().item()
        metrics["win_rate"] = win_rate(after.rewards, previous.rewards)
        metrics["win_rate_against"] = "parent"
    else:
        metrics["win_rate"] = win_rate(after.rewards, base.rewards)
        metrics["win_rate_against"] = "base"
    started = (
        metrics["reward_parent"]
        if (parent is not None and started_from_parent)
        else metrics["reward_base"]
    )
    metrics["reward_before"] = started
    metrics["reward_gain"] = metrics["reward_after"] - started
    return metrics
