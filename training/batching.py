"""Text -> token tensors, the same way for reward, DPO, PPO and evaluation, and which rows go
in each training batch (``batches``, seeded: the same on every process).

A prompt is ``instruction + "\\n\\n" + prompt`` (Vertex's instruction prefix), tokenized with the
tokenizer's BOS and cut to ``prompt_sequence_length`` tokens from the left (the end of a prompt
matters most).

Policy side (DPO, generation): a completion is tokenized on its own without special tokens, cut
to ``target_sequence_length - 1`` tokens, and ends with EOS, so a policy learns to stop.

Reward side: ``core.reward_format.reward_input_ids`` -- the two texts joined, BOS added, no
EOS -- the one rule shared with the serving engine, which scores ``POST /v1/rewards`` requests, so a
score seen in training is the score the server returns. PPO decodes its sampled responses and
scores them the same way. Over-long inputs keep BOS and their last tokens.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from core.reward_format import reward_input_ids
from training.data import PreferencePair


def format_prompt(prompt: str, instruction: str = "") -> str:
    return f"{instruction}\n\n{prompt}" if instruction else prompt


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, instruction: str, max_tokens: int
) -> list[int]:
    return truncate_left(
        tokenizer(format_prompt(prompt, instruction)).input_ids, max_tokens, tokenizer.bos_token_id
    )


def truncate_left(ids: list[int], max_tokens: int, bos_id: int | None) -> list[int]:
    """At most ``max_tokens`` ids: BOS (if first) plus the last ones."""
    if len(ids) <= max_tokens:
        return ids
    bos = [ids[0]] if bos_id is not None and ids[0] == bos_id else []
    return bos + ids[len(ids) - (max_tokens - len(bos)) :]


def encode_completion(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False).input_ids[: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[Tensor, Tensor]:
    """Pad to the longest row. Returns (ids [B, T], attention mask [B, T])."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@dataclass(frozen=True)
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    instruction: str,
    prompt_length: int,
    target_length: int,
) -> list[EncodedPair]:
    return [
        EncodedPair(
            prompt=encode_prompt(tokenizer, p.prompt, instruction, prompt_length),
            chosen=encode_completion(tokenizer, p.chosen, target_length),
            rejected=encode_completion(tokenizer, p.rejected, target_length),
            margin=p.margin,
        )
        for p in pairs
    ]


def encode_reward_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    instruction: str,
    max_tokens: int,
) -> list[EncodedPair]:
    """Pairs as the reward model reads them (whole sequences in ``chosen``/``rejected``)."""
    encoded = []
    for p in pairs:
        prompt = format_prompt(p.prompt, instruction)
        chosen, rejected = (
            truncate_left(
                reward_input_ids(tokenizer, prompt, c), max_tokens, tokenizer.bos_token_id
            )
            for c in (p.chosen, p.rejected)
        )
        encoded.append(EncodedPair(prompt=[], chosen=chosen, rejected=rejected, margin=p.margin))
    return encoded


@dataclass(frozen=True)
class Prompt:
    """A formatted prompt (instruction included) and its token ids."""

    text: str
    ids: list[int]


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], instruction: str, max_tokens: int
) -> list[Prompt]:
    return [
        Prompt(format_prompt(p, instruction), encode_prompt(tokenizer, p, instruction, max_tokens))
        for p in prompts
    ]


@dataclass(frozen=True)
class SequenceBatch:
    """Right-padded prompt+completion rows; ``target_mask`` marks the completion tokens."""

    input_ids: Tensor  # [B, T]
    attention_mask: Tensor  # [B, T]
    target_mask: Tensor  # [B, T]

    def to(self, device: torch.device) -> SequenceBatch:
        return SequenceBatch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.target_mask))
        )


def sequence_batch(
    prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int
) -> SequenceBatch:
    ids, mask = pad([p + c for p, c in zip(prompts, completions)], pad_id)
    target = torch.zeros_like(mask)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        target[i, len(p) : len(p) + len(c)] = 1
    return SequenceBatch(ids, mask, target)


def pair_batch(pairs: Sequence[EncodedPair], pad_id: int) -> tuple[SequenceBatch, Tensor]:
    """Chosen rows then rejected rows in one batch [2B, T] (one forward pass), and margins [B]."""
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    margins = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    return sequence_batch(prompts, completions, pad_id), margins


def batches(n_rows: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of row indices: seeded reshuffled epochs, identical on every process."""
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            epoch = list(range(n_rows))
            rng.shuffle(epoch)
            order += epoch
        yield order[:batch_size]
        order = order[batch_size:]
