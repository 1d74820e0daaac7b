"""PPO on a policy LoRA, with the reference, reward and value models on the same base copy.

One iteration (``train_steps`` of them):

    1. rollout     sample a response per prompt from the policy          (adapter "policy")
    2. score       old log-probs + values                                (adapter "policy")
                   reference log-probs                                   (adapters disabled)
                   reward model score of prompt + decoded response       (adapter "reward")
    3. rewards     -kl_coeff * KL_t per token, + score on the last token; GAE -> advantages
    4. update      ppo_epochs x num_minibatches steps of the clipped policy + value loss
    5. kl_coeff    fixed, or adapted towards kl_target (Ziegler et al.)

Prompts are ``instruction + "\\n\\n" + prompt`` as in the Vertex pipeline. The math lives in
training/ppo_math.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from core.settings import Settings
from training.batching import Prompt, batches, encode_prompts
from training.config import PPOConfig
from training.data import load_prompts, split_holdout
from training.distributed import World, check_in_sync, data_parallel
from training.lineage import build_lineage
from training.policy import evaluate_policy, prepare_policy
from training.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from training.progress import MetricsSink, Progress
from training.publish import finish_run
from training.resolve import current_alias
from training.rollout import Rollout, response_outputs, sample, score
from training.run import RunContext, RunResult, close_run, frozen_source, start_run
from training.shared_base import POLICY, REWARD, SharedBase, load_shared_base

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experience:
    """One rollout batch with everything the PPO update needs ([B] or [B, Lr])."""

    rollout: Rollout
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    scores: Tensor
    kl: Tensor  # per token, the penalty's estimator

    @property
    def mask(self) -> Tensor:
        return self.rollout.response_mask


@torch.no_grad()
def collect(
    shared: SharedBase, prompts: list[Prompt], config: PPOConfig, kl_coeff: float, seed: int
) -> Experience:
    """Steps 1-3: sample, score, and turn scores into per-token advantages."""
    with shared.adapter(POLICY):
        rollout = sample(
            shared,
            [p.ids for p in prompts],
            config.target_sequence_length,
            config.temperature,
            seed,
        )
        policy = response_outputs(shared, rollout, config.temperature, with_values=True)
    with shared.adapter(None):
        reference = response_outputs(shared, rollout, config.temperature)
    max_tokens = config.prompt_sequence_length + config.target_sequence_length
    scores = score(shared, rollout, REWARD, [p.text for p in prompts], max_tokens)  # [B]
    mask = rollout.response_mask
    rewards, kl = kl_penalized_rewards(
        scores, policy["logprobs"], reference["logprobs"], mask, kl_coeff, config.kl_estimator
    )
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    values = policy["values"] * mask
    advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, mask)
    return Experience(rollout, policy["logprobs"], values, advantages, returns, scores, kl)


def update(
    model: nn.Module,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    exp: Experience,
    config: PPOConfig,
    seed: int,
) -> dict[str, float]:
    """Step 4: PPO epochs over minibatches of one rollout batch. Returns mean statistics."""
    generator = torch.Generator().manual_seed(seed)
    n = exp.rollout.response.shape[0]
    stats: dict[str, list[float]] = {
        "pg_loss": [],
        "vf_loss": [],
        "clipfrac": [],
        "approx_kl": [],
        "vf_clipfrac": [],
    }
    for _ in range(config.ppo_epochs):
        for rows in torch.randperm(n, generator=generator).chunk(config.num_minibatches):
            mask = exp.mask[rows]
            out = response_outputs(
                model, exp.rollout.rows(rows), config.temperature, with_values=True
            )
            pg_loss, clipfrac, approx_kl = policy_loss(
                out["logprobs"], exp.logprobs[rows], exp.advantages[rows], mask, config.cliprange
            )
            vf_loss, vf_clipfrac = value_loss(
                out["values"], exp.values[rows], exp.returns[rows], mask, config.cliprange_value
            )
            loss = pg_loss + config.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            for key, value in (
                ("pg_loss", pg_loss),
                ("vf_loss", vf_loss),
                ("clipfrac", clipfrac),
                ("approx_kl", approx_kl),
                ("vf_clipfrac", vf_clipfrac),
            ):
                stats[key].append(value.item())
    return {k: sum(v) / len(v) for k, v in stats.items()}


def fit(ctx: RunContext, shared: SharedBase, prompts: list[Prompt], progress: Progress) -> None:
    config: PPOConfig = ctx.config  # type: ignore[assignment]
    world: World = ctx.world
    if config.batch_size % (world.size * config.num_minibatches):
        raise ValueError(
            f"batch_size {config.batch_size} must split into {world.size} processes x "
            f"{config.num_minibatches} minibatches: change --batch-size or --num-minibatches"
        )
    shared.add_value_head()
    model = data_parallel(shared, world)
    params = shared.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    kl_ctl = (
        AdaptiveKLController(config.kl_coeff, config.kl_target, config.kl_horizon)
        if config.adaptive_kl
        else FixedKLController(config.kl_coeff)
    )
    for step, rows in enumerate(
        batches(len(prompts), config.batch_size, config.train_steps, config.seed), 1
    ):
        seed = config.seed * 1_000_003 + step * 1000 + world.rank
        shared.eval()  # sampling and scoring without LoRA dropout
        exp = collect(shared, world.shard([prompts[i] for i in rows]), config, kl_ctl.value, seed)
        shared.train()
        stats = update(model, params, optimizer, exp, config, seed)
        kl_per_response = (exp.kl * exp.mask).sum(-1).mean().item()
        logged = {
            "reward": world.mean(exp.scores.mean().item()),
            "kl": world.mean(kl_per_response),
            "kl_coeff": kl_ctl.value,
            "loss": world.mean(stats["pg_loss"] + config.vf_coef * stats["vf_loss"]),
            "response_length": world.mean(exp.rollout.lengths.float().mean().item()),
            "advantage_mean": masked_mean(exp.advantages, exp.mask).item(),
        }
        logged.update({k: world.mean(v) for k, v in stats.items()})
        kl_ctl.update(logged["kl"], config.batch_size)
        progress.log(step, "train", **logged)
        progress.advance()
    shared.eval()
    check_in_sync(params, world)


def main(
    config: PPOConfig,
    *,
    settings: Settings | None = None,
    registry: Registry | None = None,
    on_metrics: MetricsSink | None = None,
) -> RunResult | None:
    """Train, evaluate and register a policy adapter with PPO; None on ranks other than 0."""
    ctx = start_run(config, settings, registry, on_metrics)
    try:
        production_at_start = current_alias(ctx, config.adapter, "production")
        data = load_prompts(frozen_source(ctx, config.prompts), ctx.settings)
        train_prompts, eval_prompts = split_holdout(
            list(data.prompts), config.eval_fraction, config.seed
        )
        shared = load_shared_base(ctx.settings)
        tok = shared.tokenizer

        def encode(prompts: list[str]) -> list[Prompt]:
            return encode_prompts(tok, prompts, config.instruction, config.prompt_sequence_length)

        setup = prepare_policy(ctx, shared, config)

        progress = ctx.progress(config.train_steps, f"ppo {config.adapter}")
        try:
            fit(ctx, shared, encode(train_prompts), progress)
        finally:
            progress.close()
        if not ctx.world.is_main:
            return None
        metrics: dict[str, Any] = evaluate_policy(
            ctx, shared, setup, encode(eval_prompts[: config.max_eval_prompts]), config
        )
        metrics["train_prompts"] = len(train_prompts)
        metrics["final_kl_coeff"] = progress.series("kl_coeff")[-1]
        metrics["reward_curve"] = progress.curve("reward")
        metrics["kl_curve"] = progress.curve("kl")
        progress.log(config.train_steps, phase="final", **metrics)
        lineage = build_lineage(ctx, "ppo", {"prompts": data.lineage()}, **setup.lineage)
        return finish_run(
            ctx,
            shared,
            POLICY,
            metrics,
            lineage,
            expected_production=production_at_start,
            history=progress.history,
        )
    finally:
        close_run(ctx)
