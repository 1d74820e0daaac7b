"""Rollouts: sample responses to prompts, then read their log-probabilities, values and scores.

Rewards are read from text: each response is decoded and scored as ``prompt + response`` the
way the server scores completions (training/batching.py).

Layout of a rollout (B rows)::

    query     [B, Lq]  left-padded prompt tokens    pad pad q q q
    response  [B, Lr]  right-padded sampled tokens  r r EOS pad
    sequence  [B, Lq + Lr] = query ++ response

The logits at sequence position Lq - 1 + t predict response token t, so response-aligned
tensors are read from the slice [Lq - 1, Lq + Lr - 1). Sampling uses its own torch.Generator:
the same seed gives the same responses, whatever else used the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from core.reward_format import reward_input_ids
from training.batching import pad, truncate_left
from training.ppo_math import logprobs_from_logits
from training.shared_base import SharedBase, position_ids_from_mask


@dataclass(frozen=True)
class Rollout:
    query: Tensor  # [B, Lq]
    query_mask: Tensor  # [B, Lq]
    response: Tensor  # [B, Lr]
    response_mask: Tensor  # [B, Lr] ones up to and including EOS
    sampled_logprobs: Tensor | None = None  # [B, Lr] log p of each token when it was sampled

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1)

    def rows(self, index: Tensor | slice) -> Rollout:
        logprobs = self.sampled_logprobs[index] if self.sampled_logprobs is not None else None
        return Rollout(
            self.query[index],
            self.query_mask[index],
            self.response[index],
            self.response_mask[index],
            logprobs,
        )


def response_mask_from(response: Tensor, eos_id: int) -> Tensor:
    """1 up to and including each row's first EOS (all ones when there is none). [B, Lr]."""
    is_eos = (response == eos_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before position t
    return (eos_before == 0).long()


@torch.no_grad()
def sample(
    shared: SharedBase,
    queries: Sequence[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> Rollout:
    """Sample a response per query from the active adapter (KV-cached decoding)."""
    tokenizer, model = shared.tokenizer, shared.model
    device = model.device
    query, query_mask = (t.to(device) for t in pad(queries, tokenizer.pad_token_id, side="left"))
    generator = torch.Generator(device=device).manual_seed(seed)
    B = len(queries)
    mask = query_mask
    out = model(
        input_ids=query,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=True,
    )
    position = position_ids_from_mask(mask)[:, -1:]  # [B, 1]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logprobs = [], []
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(out.logits[:, -1].float() / temperature, dim=-1)  # [B, V]
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)
        tokens.append(token)
        logprobs.append(logp.gather(-1, token[:, None]).squeeze(-1))
        done |= token == tokenizer.eos_token_id
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    response = torch.stack(tokens, dim=1)
    mask = response_mask_from(response, tokenizer.eos_token_id)
    return Rollout(query, query_mask, response, mask, torch.stack(logprobs, dim=1) * mask)


def response_outputs(
    model: torch.nn.Module,
    rollout: Rollout,
    temperature: float = 1.0,
    with_values: bool = False,
    with_logits: bool = False,
) -> dict[str, Tensor]:
    """Log-probabilities (and values, logits) of the response tokens under the active adapter.

    ``model`` is the SharedBase or its DDP wrapper. Returns ``logprobs`` [B, Lr] and, if asked,
    ``values`` [B, Lr] (value of the state before each token) and ``logits`` [B, Lr, V].
    """
    heads = ("logits", "values") if with_values else ("logits",)
    out = model(rollout.input_ids, rollout.attention_mask, heads=heads)
    Lq, Lr = rollout.query.shape[1], rollout.response.shape[1]
    logits = out["logits"][:, Lq - 1 : Lq + Lr - 1] / temperature
    result = {"logprobs": logprobs_from_logits(logits, rollout.response) * rollout.response_mask}
    if with_values:
        result["values"] = out["values"][:, Lq - 1 : Lq + Lr - 1]
    if with_logits:
        result["logits"] = logits
    return result


def scoring_inputs(
    shared: SharedBase, rollout: Rollout, prompts: Sequence[str], max_tokens: int | None = None
) -> tuple[Tensor, Tensor]:
    """What the reward model reads for each response: ``prompt + decoded response`` tokenized
    as the server's /v1/rewards does (training/batching.py), left-padded. ([B, L], [B, L])."""
    tok = shared.tokenizer
    seqs = [
        reward_input_ids(tok, p, text)
        for p, text in zip(prompts, decode_responses(shared, rollout))
    ]
    if max_tokens is not None:
        seqs = [truncate_left(s, max_tokens, tok.bos_token_id) for s in seqs]
    ids, mask = pad(seqs, tok.pad_token_id, side="left")
    return ids.to(rollout.query.device), mask.to(rollout.query.device)


@torch.no_grad()
def score(
    shared: SharedBase,
    rollout: Rollout,
    reward_adapter: str,
    prompts: Sequence[str],
    max_tokens: int | None = None,
) -> Tensor:
    """The reward adapter's score of each (prompt text, sampled response). [B]."""
    ids, mask = scoring_inputs(shared, rollout, prompts, max_tokens)
    with shared.adapter(reward_adapter):
        return shared.scores(ids, mask)


def decode_responses(shared: SharedBase, rollout: Rollout) -> list[str]:
    return shared.tokenizer.batch_decode(
        [row[mask.bool()] for row, mask in zip(rollout.response, rollout.response_mask)],
        skip_special_tokens=True,
    )
