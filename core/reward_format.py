"""How a reward model reads a (prompt, completion): one rule for training and serving.

The texts are joined and tokenized with the tokenizer's special tokens (BOS first, no EOS);
the score is taken at the last token. Training a reward adapter and scoring with it on
``POST /v1/rewards`` both call this, so a score seen in training is the score served.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def reward_input_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> list[int]:
    """Token ids of ``prompt + completion`` as the reward model reads them."""
    ids: list[int] = tokenizer(prompt + completion)["input_ids"]
    return ids
