"""A synthetic preference task small models can learn: "more words from PREFERRED is better".

Prompts and completions are short sequences of common English words, each a single token of
the embedded tiny Llama's tokenizer. Of two completions for a prompt, the one holding more
PREFERRED words is chosen. Used by the tests to show that the reward model, PPO and DPO learn,
by the benchmark, and by ``python -m training demo-data`` / ``demo-base`` for the walkthrough
in docs/training.md.

Why a demo base: the embedded tiny Llama has random weights, so its next-token distribution is
nearly uniform and its logits can move by little more than a nat (RMS-normed hidden states
times 0.02-scale output weights): no LoRA on it can come to prefer anything strongly. As in
real RLHF, a supervised fine-tune comes first -- here a few seconds of full training on the
task's language (PREFERRED words at 15%) -- and reward modelling and PPO start from that.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.data import write_jsonl

PREFERRED = (
    "thank",
    "help",
    "helpful",
    "honest",
    "sure",
    "warm",
    "music",
    "sunlight",
    "fun",
    "care",
)
NEUTRAL = (
    "the",
    "river",
    "town",
    "dog",
    "fox",
    "book",
    "cup",
    "tea",
    "water",
    "window",
    "morning",
    "noon",
    "island",
    "station",
    "engine",
    "server",
    "model",
    "token",
    "number",
    "letter",
    "poem",
    "sea",
    "ball",
    "car",
    "list",
    "name",
    "time",
    "day",
    "work",
    "topic",
    "sugar",
    "eggs",
    "flour",
    "butter",
    "ship",
    "port",
    "visit",
    "train",
    "read",
    "play",
    "cook",
    "check",
    "opened",
    "moved",
    "small",
    "large",
    "short",
    "old",
    "deep",
    "wide",
)
VOCABULARY = PREFERRED + NEUTRAL


def preferred_count(text: str) -> int:
    """How many words of ``text`` are in PREFERRED: the rule a reward model should learn."""
    preferred = set(PREFERRED)
    return sum(word.strip(".,:;!?") in preferred for word in text.split())


def make_prompt(rng: random.Random) -> str:
    topic = " ".join(rng.choice(NEUTRAL) for _ in range(3))
    return f"Write about {topic}:"


def make_completion(rng: random.Random, length: int, n_preferred: int) -> str:
    words = [rng.choice(PREFERRED) for _ in range(n_preferred)]
    words += [rng.choice(NEUTRAL) for _ in range(length - n_preferred)]
    rng.shuffle(words)
    return " " + " ".join(words)


def make_preference_rows(n: int, seed: int = 0, length: int = 6) -> list[dict[str, Any]]:
    """``n`` TRL rows {prompt, chosen, rejected}: chosen holds strictly more PREFERRED words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        low, high = sorted(rng.sample(range(length + 1), 2))
        rows.append(
            {
                "prompt": make_prompt(rng),
                "chosen": make_completion(rng, length, high),
                "rejected": make_completion(rng, length, low),
            }
        )
    return rows


def make_prompt_rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"prompt": make_prompt(rng)} for _ in range(n)]


def make_sft_texts(
    n: int, seed: int = 2, length: int = 6, preferred_rate: float = 0.15
) -> list[tuple[str, str]]:
    """(prompt, completion) pairs in the task's language, PREFERRED words at ``preferred_rate``:
    what a supervised base model would have seen before RLHF."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        n_preferred = sum(rng.random() < preferred_rate for _ in range(length))
        texts.append((make_prompt(rng), make_completion(rng, length, n_preferred)))
    return texts


def write_demo_data(
    folder: Path, n_pairs: int = 1000, n_prompts: int = 200, seed: int = 0
) -> dict[str, Path]:
    """Preference pairs in TRL and Vertex format and a prompt file, for the docs walkthrough."""
    folder = Path(folder)
    rows = make_preference_rows(n_pairs, seed=seed)
    rng = random.Random(seed + 1)
    vertex = []
    for row in rows:  # Vertex rows keep the winner at a random position
        choice = rng.randint(0, 1)
        candidates = [row["rejected"], row["rejected"]]
        candidates[choice] = row["chosen"]
        vertex.append(
            {
                "input_text": row["prompt"],
                "candidate_0": candidates[0],
                "candidate_1": candidates[1],
                "choice": choice,
            }
        )
    return {
        "preferences": write_jsonl(folder / "preferences.jsonl", rows),
        "preferences_vertex": write_jsonl(folder / "preferences_vertex.jsonl", vertex),
        "prompts": write_jsonl(
            folder / "prompts.jsonl", make_prompt_rows(n_prompts, seed=seed + 2)
        ),
    }


def make_demo_base(source: Path, target: Path, steps: int = 120, seed: int = 0) -> Path:
    """Fine-tune all weights of the checkpoint at ``source`` on the task's texts for ``steps``
    steps and save the result at ``target`` (same architecture, so the same fingerprint)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.batching import pad

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    seqs = [
        tokenizer(p).input_ids
        + tokenizer(c, add_special_tokens=False).input_ids
        + [tokenizer.eos_token_id]
        for p, c in make_sft_texts(2000, seed=seed + 2)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(seqs), (32,), generator=generator).tolist()
        ids, mask = pad([seqs[i] for i in rows], tokenizer.pad_token_id)
        loss = model(
            input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def preferred_rate(texts: Sequence[str]) -> float:
    """Mean number of PREFERRED words per text (the ground truth behind the reward model)."""
    return sum(preferred_count(t) for t in texts) / max(1, len(texts))
