"""Reward scoring on the served base: a reward adapter's LoRA in a slot plus its score head.

    score = h_last · w_score        h_last: final hidden state [hidden] at the last real token
                                    w_score: the adapter's head [1, hidden]

This is what ``LlamaForSequenceClassification`` with the same peft adapter computes (it pools
the last non-pad token); inputs here are left padded with per-row positions, so a padded row
scores exactly as it would alone.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from core.names import AdapterVersion
from service.engine.batch import left_pad
from service.engine.lora import LoraModel


@torch.no_grad()
def score_rows(
    model: PreTrainedModel, lora: LoraModel, slot: int, sequences: list[list[int]], pad_id: int
) -> list[float]:
    """Scores of ``sequences`` under the reward adapter in ``slot``."""
    ids, mask, positions = left_pad(sequences, pad_id, lora.device)
    with lora.use(lora.gather([slot] * len(sequences))):
        hidden = model.base_model(  # the decoder without its LM head: [n, L, hidden]
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
    head = lora.score_heads[slot]  # [1, hidden]
    return (hidden[:, -1] @ head.T)[:, 0].float().tolist()


@dataclass(eq=False)
class ScoreRequest:
    """Sequences to score with one reward adapter version, a few rows per engine step (a
    "request" like a generation's: a job is a training job)."""

    version: AdapterVersion
    sequences: list[list[int]]
    future: Future
    scores: list[float] = field(default_factory=list)

    def next_rows(self, token_budget: int) -> list[list[int]]:
        """The next rows whose padded size fits ``token_budget`` (at least one row)."""
        start, width, end = len(self.scores), 0, len(self.scores)
        while end < len(self.sequences):
            width = max(width, len(self.sequences[end]))
            if end > start and (end - start + 1) * width > token_budget:
                break
            end += 1
        return self.sequences[start:end]
