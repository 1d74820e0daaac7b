"""Reward model: the base + a LoRA + a scalar score head, trained on preference pairs.

    r(x, y)  = score_head(h_last(tokenizer(x + y)))       one number per sequence (last token)
    loss     = -logsigmoid(r(x, y_chosen) - r(x, y_rejected) - margin)   (Bradley-Terry)

Saved as a SEQ_CLS PEFT folder (LoRA + ``score``) that plain peft loads onto
``LlamaForSequenceClassification(num_labels=1)``; registered with kind ``reward``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from core.settings import Settings
from training.batching import EncodedPair, batches, encode_reward_pairs, pair_batch
from training.config import RewardConfig
from training.data import load_preferences, split_holdout
from training.distributed import check_in_sync, data_parallel
from training.evaluate import pairwise_accuracy, reward_model_metrics
from training.lineage import build_lineage
from training.progress import MetricsSink, Progress
from training.publish import finish_run
from training.resolve import current_alias
from training.run import RunContext, RunResult, close_run, frozen_source, lora_spec, start_run
from training.shared_base import REWARD, SharedBase, load_shared_base, lora_config

if TYPE_CHECKING:  # core.registry imports boto3: loaded on first use only, not at import
    from core.registry import Registry

log = logging.getLogger(__name__)


def bradley_terry_loss(
    r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | float = 0.0
) -> Tensor:
    """Mean -log sigmoid(r_chosen - r_rejected - margin) over pairs. [N], [N] -> scalar."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def fit(
    ctx: RunContext,
    shared: SharedBase,
    train: list[EncodedPair],
    held_out: list[EncodedPair],
    progress: Progress,
) -> None:
    """Train the reward adapter in place."""
    config: RewardConfig = ctx.config  # type: ignore[assignment]
    world = ctx.world
    if config.batch_size < world.size:
        raise ValueError(
            f"batch_size {config.batch_size} < {world.size} processes: raise --batch-size"
        )
    model = data_parallel(shared, world)
    params = shared.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    pad_id = shared.tokenizer.pad_token_id
    eval_every = max(1, config.train_steps // 5)
    shared.train()
    for step, rows in enumerate(
        batches(len(train), config.batch_size, config.train_steps, config.seed), 1
    ):
        batch, margins = pair_batch(world.shard([train[i] for i in rows]), pad_id)
        batch = batch.to(ctx.device)
        scores = model(batch.input_ids, batch.attention_mask, heads=("scores",))["scores"]
        r_chosen, r_rejected = scores.chunk(2)  # [b], [b]
        loss = bradley_terry_loss(r_chosen, r_rejected, margins.to(ctx.device) + config.margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        progress.log(
            step,
            loss=world.mean(loss.item()),
            accuracy=world.mean(pairwise_accuracy(r_chosen.detach(), r_rejected.detach())),
        )
        progress.advance()
        if world.is_main and (step % eval_every == 0 or step == config.train_steps):
            shared.eval()
            progress.log(step, phase="eval", **reward_model_metrics(shared, held_out, REWARD))
            shared.train()
    shared.eval()
    check_in_sync(params, world)


def main(
    config: RewardConfig,
    *,
    settings: Settings | None = None,
    registry: Registry | None = None,
    on_metrics: MetricsSink | None = None,
) -> RunResult | None:
    """Train, evaluate and register a reward adapter; None on processes other than rank 0."""
    ctx = start_run(config, settings, registry, on_metrics)
    try:
        production_at_start = current_alias(ctx, config.adapter, "production")
        data = load_preferences(frozen_source(ctx, config.data), ctx.settings)
        train_pairs, eval_pairs = split_holdout(list(data.pairs), config.eval_fraction, config.seed)
        shared = load_shared_base(ctx.settings)
        tokenizer = shared.tokenizer
        max_tokens = config.prompt_sequence_length + config.target_sequence_length
        train, held_out = (
            encode_reward_pairs(tokenizer, pairs, config.instruction, max_tokens)
            for pairs in (train_pairs, eval_pairs)
        )
        shared.add_adapter(REWARD, lora_config("reward", lora_spec(config), ctx.base_info.model_id))

        progress = ctx.progress(config.train_steps, f"reward {config.adapter}")
        try:
            fit(ctx, shared, train, held_out, progress)
        finally:
            progress.close()
        if not ctx.world.is_main:
            return None
        metrics: dict[str, Any] = reward_model_metrics(shared, held_out, REWARD)
        metrics.update(
            {
                "train_accuracy": reward_model_metrics(shared, train[: len(held_out) * 4], REWARD)[
                    "reward_accuracy"
                ],
                "final_loss": progress.series("loss")[-1],
                "loss_curve": progress.curve("loss"),
                "accuracy_curve": progress.curve("reward_accuracy", phase="eval"),
                "eval_pairs": len(held_out),
                "train_pairs": len(train),
            }
        )
        progress.log(config.train_steps, phase="final", **metrics)
        lineage = build_lineage(ctx, "reward", {"preferences": data.lineage()})
        return finish_run(
            ctx,
            shared,
            REWARD,
            metrics,
            lineage,
            expected_production=production_at_start,
            history=progress.history,
        )
    finally:
        close_run(ctx)
