"""Token ids to streamed text: incremental detokenization and stop strings.

Decoding one token at a time is wrong for byte-level and SentencePiece tokenizers (a character
may span tokens; a leading space depends on the previous token), so, as TGI and vLLM do, each
step decodes a short window and emits only the new, complete characters.

Text that could be the start of a stop string is held back until it is known not to be one, so
a stream never shows part of a stop string, and the final text excludes it (OpenAI semantics).
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

_PROMPT_CONTEXT = 5  # prompt tokens decoded with the first outputs, for correct leading spaces


class IncrementalDecoder:
    """Feed generated token ids, get the text they add."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int]):
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-_PROMPT_CONTEXT:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        return text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(prefix) :]
        return ""  # an incomplete character: wait for the next token


class StopMatcher:
    """Cuts the text at the first stop string and holds back possible stop-string prefixes."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""

    def push(self, delta: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop string was reached)."""
        if not self.stops:
            return delta, False
        self.pending += delta
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            text, self.pending = self.pending[: min(hits)], ""
            return text, True
        hold = self._held_suffix()
        text = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return text, False

    def flush(self) -> str:
        """The held-back text, when generation ends for another reason."""
        text, self.pending = self.pending, ""
        return text

    def _held_suffix(self) -> int:
        """Length of the longest suffix of ``pending`` that is a proper prefix of a stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:n]):
                    best = n
                    break
        return best
