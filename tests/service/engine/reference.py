"""Greedy decoding written out with plain transformers: the reference the engine's sampling
(penalties, logit bias, min_tokens) is checked against, in the engine and the HTTP tests."""

from __future__ import annotations

import torch

from service.engine import SamplingParams


@torch.no_grad()
def reference_greedy(model, prompt_ids: list[int], params: SamplingParams, eos: set[int]) -> list[int]:
    """Greedy decoding with the penalties written out token by token, as OpenAI and vLLM
    define them, on a full forward pass per step."""
    out: list[int] = []
    while len(out) < params.max_tokens:
        logits = model(input_ids=torch.tensor([prompt_ids + out])).logits[0, -1].clone()
        for token, bias in params.logit_bias:
            logits[token] += bias
        if len(out) < params.min_tokens:
            logits[list(eos)] = float("-inf")
        for token in set(prompt_ids + out):
            r = params.repetition_penalty
            logits[token] = logits[token] / r if logits[token] > 0 else logits[token] * r
        for token in set(out):
            logits[token] -= params.frequency_penalty * out.count(token) + params.presence_penalty
        out.append(int(logits.argmax()))
        if out[-1] in eos:
            break
    return out
