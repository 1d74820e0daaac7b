"""Direct Preference Optimization (Rafailov et al., 2023) on a policy LoRA.

    h      = [log pi(y_c|x) - log ref(y_c|x)] - [log pi(y_r|x) - log ref(y_r|x)]
    loss   = -(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)
           + rpo_alpha * NLL(y_c|x)          (RPO, Pang et al. 2024; TRL's ``rpo_alpha``)

NLL(y_c|x) is the chosen completions' mean negative log-likelihood per token, as TRL's
``nll_loss``: it keeps the chosen text likely, so DPO cannot win the pair by making both
completions unlikely (the fluent text falls apart while the margin still grows).

pi = base + policy LoRA; ref = the same base with the adapter disabled, so DPO needs no second
model. log p(y|x) sums the completion's token log-probabilities (EOS included).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from core.settings import Settings
from training.batching import EncodedPair, batches, encode_pairs, encode_prompts, pair_batch
from training.config import DPOConfig
from training.data import load_preferences, split_holdout
from training.distributed import check_in_sync, data_parallel
from training.evaluate import pair_logprob_margins
from training.lineage import build_lineage
from training.policy import evaluate_policy, prepare_policy
from training.progress import MetricsSink, Progress
from training.publish import finish_run
from training.resolve import current_alias
from training.run import RunContext, RunResult, close_run, frozen_source, start_run
from training.shared_base import POLICY, SharedBase, load_shared_base, sequence_logprobs

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Registry

log = logging.getLogger(__name__)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
    chosen_tokens: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """DPO loss over pairs (all inputs [N] sequence log-probs), plus ``rpo_alpha`` times the
    chosen completions' per-token NLL (``chosen_tokens`` [N]: their token counts, needed when
    ``rpo_alpha`` > 0). Returns (loss, h [N])."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
        -beta * h
    )
    loss = losses.mean()
    if rpo_alpha:
        assert chosen_tokens is not None, "rpo_alpha needs the chosen completions' token counts"
        loss = loss + rpo_alpha * chosen_nll(policy_chosen, chosen_tokens)
    return loss, h.detach()


def chosen_nll(policy_chosen: Tensor, chosen_tokens: Tensor) -> Tensor:
    """Mean NLL per token over all chosen completions of the batch ([N] sums, [N] counts)."""
    return -policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)


def fit(ctx: RunContext, shared: SharedBase, train: list[EncodedPair], progress: Progress) -> None:
    config: DPOConfig = ctx.config  # type: ignore[assignment]
    world = ctx.world
    if config.batch_size < world.size:
        raise ValueError(
            f"batch_size {config.batch_size} < {world.size} processes: raise --batch-size"
        )
    model = data_parallel(shared, world)
    params = shared.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    pad_id = shared.tokenizer.pad_token_id
    shared.train()
    for step, rows in enumerate(
        batches(len(train), config.batch_size, config.train_steps, config.seed), 1
    ):
        batch, _ = pair_batch(world.shard([train[i] for i in rows]), pad_id)
        batch = batch.to(ctx.device)
        with torch.no_grad(), shared.adapter(None):  # the reference: base weights alone
            ref_chosen, ref_rejected = shared.sequence_logprobs(
                batch.input_ids, batch.attention_mask, batch.target_mask
            ).chunk(2)
        chosen_tokens = batch.target_mask[:, 1:].sum(-1).chunk(2)[0]  # [B] completion tokens
        policy_chosen, policy_rejected = sequence_logprobs(
            model, batch.input_ids, batch.attention_mask, batch.target_mask
        ).chunk(2)
        loss, h = dpo_loss(
            policy_chosen,
            policy_rejected,
            ref_chosen,
            ref_rejected,
            config.beta,
            config.label_smoothing,
            config.rpo_alpha,
            chosen_tokens,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        progress.log(
            step,
            loss=world.mean(loss.item()),
            accuracy=world.mean((h > 0).float().mean().item()),
            margin=world.mean((policy_chosen - policy_rejected).mean().item()),
            chosen_nll=world.mean(chosen_nll(policy_chosen.detach(), chosen_tokens).item()),
        )
        progress.advance()
    shared.eval()
    check_in_sync(params, world)


def main(
    config: DPOConfig,
    *,
    settings: Settings | None = None,
    registry: Registry | None = None,
    on_metrics: MetricsSink | None = None,
) -> RunResult | None:
    """Train, evaluate and register a policy adapter with DPO; None on ranks other than 0."""
    ctx = start_run(config, settings, registry, on_metrics)
    try:
        production_at_start = current_alias(ctx, config.adapter, "production")
        data = load_preferences(frozen_source(ctx, config.data), ctx.settings)
        train_pairs, eval_pairs = split_holdout(list(data.pairs), config.eval_fraction, config.seed)
        shared = load_shared_base(ctx.settings)
        tok = shared.tokenizer
        train, held_out = (
            encode_pairs(
                tok,
                pairs,
                config.instruction,
                config.prompt_sequence_length,
                config.target_sequence_length,
            )
            for pairs in (train_pairs, eval_pairs)
        )
        setup = prepare_policy(ctx, shared, config)

        progress = ctx.progress(config.train_steps, f"dpo {config.adapter}")
        try:
            fit(ctx, shared, train, progress)
        finally:
            progress.close()
        if not ctx.world.is_main:
            return None
        before = pair_logprob_margins(
            shared, held_out, None
        )  # the base is frozen: same as at start
        after = pair_logprob_margins(shared, held_out, POLICY)
        metrics: dict[str, Any] = {
            "margin_before": before.mean().item(),
            "margin_after": after.mean().item(),
            "margin_gain": (after - before).mean().item(),
            # DPO's implicit reward ranks the held-out pair correctly (h > 0)
            "preference_accuracy": (after > before).float().mean().item(),
            "final_loss": progress.series("loss")[-1],
            "loss_curve": progress.curve("loss"),
            "eval_pairs": len(held_out),
            "train_pairs": len(train),
        }
        queries = encode_prompts(
            tok,
            [p.prompt for p in eval_pairs[: config.max_eval_prompts]],
            config.instruction,
            config.prompt_sequence_length,
        )
        metrics.update(evaluate_policy(ctx, shared, setup, queries, config))
        progress.log(config.train_steps, phase="final", **metrics)
        lineage = build_lineage(ctx, "dpo", {"preferences": data.lineage()}, **setup.lineage)
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
