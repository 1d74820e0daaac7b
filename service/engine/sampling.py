"""Sampling parameters and the pure functions that turn a batch of logits into next tokens.

Every row carries its own parameters; the batch is processed with tensor ops, and each sampled
row draws from its own ``torch.Generator`` so a seeded request gives the same tokens whatever
else shares its batch.

Decoding chooses from processed logits, in vLLM's order (log-probabilities stay the model's):

    logits ─► + logit_bias ─► EOS/stop ids masked until min_tokens ─► repetition penalty
           ─► - frequency x count - presence x [count > 0] ─► temperature, top-k, top-p ─► token
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch

from core.errors import InvalidRequest

MAX_TOP_LOGPROBS = 20
# Temperatures below this are greedy, as in vLLM: dividing logits by a tinier one overflows to
# inf and leaves nothing to sample from.
GREEDY_TEMPERATURE = 1e-5
# torch.Generator.manual_seed takes [-2^63, 2^64); OpenAI and vLLM bound seed to int64.
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)
PENALTY_RANGE = (-2.0, 2.0)  # presence and frequency penalties, as in OpenAI
LOGIT_BIAS_RANGE = (-100.0, 100.0)


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of decoding. ``temperature`` below 1e-5 (or ``top_k == 1``) is
    greedy; a ``top_k`` at or above the vocabulary size keeps every token.

    ``logprobs``: None for none, 0 for the chosen token's log-probability, k for the k most
    likely alternatives as well (at most 20). Log-probabilities are those of the model's
    distribution before temperature, top-k and top-p.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = field(default=())
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias); a dict is accepted
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        # Pairs sorted by token id: the parameters stay immutable and hashable.
        bias: Mapping[int, float] = dict(self.logit_bias)
        object.__setattr__(self, "logit_bias", tuple(sorted(bias.items())))
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be an integer >= 1", param="max_tokens")
        if not 0 <= self.temperature <= 100:
            raise InvalidRequest("temperature must be between 0 and 100", param="temperature")
        if not 0 < self.top_p <= 1:
            raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidRequest("top_k must be an integer >= 0 (0 turns it off)", param="top_k")
        if any(not isinstance(s, str) or not s for s in self.stop) or len(self.stop) > 16:
            raise InvalidRequest("stop must be at most 16 non-empty strings", param="stop")
        if self.seed is not None and (
            not isinstance(self.seed, int) or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]
        ):
            raise InvalidRequest(
                f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]", param="seed"
            )
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_TOP_LOGPROBS:
                raise InvalidRequest(f"{name} must be between 0 and {MAX_TOP_LOGPROBS}", param=name)
        self._check_penalties()

    def _check_penalties(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if not PENALTY_RANGE[0] <= getattr(self, name) <= PENALTY_RANGE[1]:
                raise InvalidRequest(f"{name} must be between -2 and 2", param=name)
        if not self.repetition_penalty > 0:
            raise InvalidRequest("repetition_penalty must be > 0 (1 turns it off)", param="repetition_penalty")
        if not isinstance(self.min_tokens, int) or not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidRequest(
                f"min_tokens must be an integer between 0 and max_tokens ({self.max_tokens})",
                param="min_tokens",
            )
        for token, value in self.logit_bias:
            if not isinstance(token, int) or token < 0:
                raise InvalidRequest("logit_bias keys must be token ids >= 0", param="logit_bias")
            if not LOGIT_BIAS_RANGE[0] <= value <= LOGIT_BIAS_RANGE[1]:
                raise InvalidRequest("logit_bias values must be between -100 and 100", param="logit_bias")

    def processes_logits(self, generated: int) -> bool:
        """Whether a row with ``generated`` tokens so far needs ``process_logits``."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1
            or self.logit_bias
            or generated < self.min_tokens
        )

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1

    def generator(self, device: torch.device) -> torch.Generator:
        """The request's own random stream: from ``seed``, else from fresh OS entropy."""
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        return torch.Generator(device=device).manual_seed(seed)


def choice_generator(
    params: SamplingParams, index: int, device: torch.device
) -> torch.Generator:
    """Choice ``index``'s random stream: choice 0 draws as a request with ``params.seed``
    alone does; the others from seeds mixed from (seed, index), so a seeded call for n
    choices is reproducible and its choices differ."""
    if params.seed is None or index == 0:
        return params.generator(device)
    mixed = (params.seed + index * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)  # golden-ratio step
    return torch.Generator(device=device).manual_seed(mixed)


def mask_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's ``top_k`` largest logits (0 keeps all). logits [B, V], top_k [B]."""
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)  # [B]
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, (k - 1)[:, None])  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def mask_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (nucleus), per row."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
    probs = sorted_logits.softmax(dim=-1)
    # A token is dropped when the mass of the tokens strictly before it already reaches top_p;
    # the most likely token therefore always stays.
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before >= top_p[:, None]
    # Also when top_p rounds to 0 in the logits' dtype (a float64 5e-324 is 0 in float32).
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def process_logits(
    logits: torch.Tensor,
    params: list[SamplingParams],
    prompts: list[list[int]],
    outputs: list[list[int]],
    eos_ids: Collection[int],
) -> torch.Tensor:
    """The logits decoding chooses from (see the module docstring), as vLLM processes them.
    logits [B, V]; ``prompts`` and ``outputs`` are each row's token ids so far. Rows that use no
    penalty are left as they are, and a batch where none does is returned untouched."""
    rows = [i for i, p in enumerate(params) if p.processes_logits(len(outputs[i]))]
    if not rows:
        return logits
    device, vocab = logits.device, logits.shape[-1]
    picked = [params[i] for i in rows]
    index = torch.tensor(rows, device=device)
    scores = logits[index].float()  # [R, V]
    biased = [(j, t, b) for j, p in enumerate(picked) for t, b in p.logit_bias]
    if biased:
        r, t, b = zip(*biased, strict=True)
        scores.index_put_(
            (torch.tensor(r, device=device), torch.tensor(t, device=device)),
            torch.tensor(b, dtype=scores.dtype, device=device),
            accumulate=True,
        )
    banned = [
        (j, t)
        for j, (i, p) in enumerate(zip(rows, picked, strict=True))
        if len(outputs[i]) < p.min_tokens
        for t in (*eos_ids, *p.stop_token_ids)
    ]
    if banned:
        r, t = zip(*banned, strict=True)
        scores[torch.tensor(r, device=device), torch.tensor(t, device=device)] = float("-inf")
    if any(p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1 for p in picked):
        counts = token_counts([outputs[i] for i in rows], vocab, device)  # [R, V]
        seen = token_counts([prompts[i] for i in rows], vocab, device) > 0
        seen |= counts > 0
        repetition = torch.tensor([p.repetition_penalty for p in picked], device=device)[:, None]
        # CTRL's rule, as HF and vLLM apply it: a seen token's logit moves towards -inf.
        penalty = torch.where(seen, repetition, 1.0)
        scores = torch.where(scores > 0, scores / penalty, scores * penalty)
        frequency = torch.tensor([p.frequency_penalty for p in picked], device=device)[:, None]
        presence = torch.tensor([p.presence_penalty for p in picked], device=device)[:, None]
        scores = scores - frequency * counts - presence * (counts > 0)
    processed = logits.clone()  # the raw logits still give the log-probabilities
    processed[index] = scores.to(logits.dtype)
    return processed


def token_counts(sequences: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """How often each token occurs in each sequence: [len(sequences), vocab] float."""
    width = max(map(len, sequences), default=0)
    ids = torch.full((len(sequences), width), vocab, dtype=torch.long)  # ``vocab``: padding
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    counts = torch.zeros(len(sequences), vocab + 1, device=device)
    counts.scatter_add_(1, ids.to(device), torch.ones(ids.shape, device=device))
    return counts[:, :vocab]


def choose_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator],
) -> torch.Tensor:
    """Next token of each row: argmax for greedy rows, else a draw from the processed
    distribution with the row's own generator. logits [B, V] -> tokens [B]."""
    # max(...).indices, not argmax: the same index (the first maximum) at 0.39x the time on
    # the CPU (32 x 32,000 logits: 293 against 758 us, 3% of a batch-32 decode step)
    tokens = logits.max(dim=-1).indices
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    if not sampled:
        return tokens
    device = logits.device
    rows = torch.tensor(sampled, device=device)
    temperature = torch.tensor([params[i].temperature for i in sampled], device=device)
    # Clamped here: any top_k >= vocab keeps every token, and 2^63 would overflow the tensor.
    vocab = logits.shape[-1]
    top_k = torch.tensor([min(params[i].top_k, vocab) for i in sampled], device=device)
    top_p = torch.tensor([params[i].top_p for i in sampled], device=device)
    scores = logits[rows].float() / temperature[:, None]
    if bool((top_k > 0).any()):
        scores = mask_top_k(scores, top_k)
    if bool((top_p < 1).any()):
        scores = mask_top_p(scores, top_p)
    # float64 makes the inverse CDF exact to ~1e-16 (MPS has no float64)
    exact = torch.float32 if device.type == "mps" else torch.float64
    probs = scores.softmax(dim=-1).to(exact)  # [S, V]
    for j, i in enumerate(sampled):
        tokens[i] = draw(probs[j], generators[i])
    return tokens


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token from ``probs`` [V] with ONE uniform draw from ``generator``: the first token
    whose cumulative probability exceeds it (inverse CDF). ``torch.multinomial`` draws V
    exponentials per row instead: for 32 rows of V = 32,000 on the CPU, 20 ms per decode step
    against 1.1 ms here (``python -m bench.sampling``). A token of probability 0 spans no
    width, so it is never drawn."""
    cdf = probs.cumsum(0)  # one row at a time: a batched float64 cumsum is 7x slower on CPU
    total = cdf[-1:]
    u = torch.rand(1, generator=generator, dtype=cdf.dtype, device=cdf.device)
    # strictly below the total, even where u * total rounds up to it
    point = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, point, right=True)[0]


@dataclass(frozen=True)
class TokenLogprobs:
    """The chosen token's log-probability and, if asked, the top alternatives."""

    logprob: float
    top: dict[int, float] | None


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, params: list[SamplingParams]
) -> list[TokenLogprobs | None]:
    """Log-probabilities of ``tokens`` [B] under ``logits`` [B, V], for rows that asked."""
    wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
    out: list[TokenLogprobs | None] = [None] * len(params)
    if not wanted:
        return out
    rows = torch.tensor(wanted, device=logits.device)
    logp = torch.log_softmax(logits[rows].float(), dim=-1)  # [W, V]
    chosen = logp.gather(-1, tokens[rows][:, None])[:, 0].tolist()
    k = max(params[i].logprobs or 0 for i in wanted)
    top_values, top_ids = logp.topk(k, dim=-1) if k else (None, None)
    for j, i in enumerate(wanted):
        n = params[i].logprobs or 0
        top = None
        if n:
            assert top_ids is not None and top_values is not None  # n > 0, so k > 0
            top = dict(zip(top_ids[j, :n].tolist(), top_values[j, :n].tolist(), strict=True))
        out[i] = TokenLogprobs(chosen[j], top)
    return out


def position_logprobs(logits: torch.Tensor, targets: torch.Tensor, k: int) -> list[TokenLogprobs]:
    """Log-probability of each ``targets`` [S] token under the logits [S, V] of the position
    before it, with the ``k`` most likely tokens if ``k`` > 0 (prompt log-probabilities)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [S, V]
    chosen = logp.gather(-1, targets[:, None])[:, 0].tolist()
    if not k:
        return [TokenLogprobs(c, None) for c in chosen]
    values, ids = logp.topk(k, dim=-1)
    return [
        TokenLogprobs(c, dict(zip(i, v, strict=True)))
        for c, i, v in zip(chosen, ids.tolist(), values.tolist(), strict=True)
    ]
