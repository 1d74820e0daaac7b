"""The demo adapter: SmolLM2-135M-Instruct taught by our DPO to answer in ALL CAPS.

A style anyone sees at once, learnt from data made here and nowhere else:

    prompts    ~200 harmless questions from templates below (no external data)
    rejected   the base's own greedy answer, through its chat template (max 32 new tokens)
    chosen     the same answer, uppercased

so the only difference the preference carries is the style. Prompts are stored rendered
through the base's chat template (as the server logs chat completions), so the adapter learns
on exactly the tokens a chat request feeds it. ``python -m training demo-adapter DIR`` writes
``DIR/preferences.jsonl`` (TRL format, what ``dpo --data`` and ``feedback import`` read; kept
if it exists, so a retrain skips the slow generation), trains
with ``training.dpo`` and writes the PEFT folder (bfloat16 weights) plus ``training.json``
(base fingerprint, config, metrics) into ``DIR``; ``service/assets/demo-adapter`` is its output.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.base.folders import base_model_info
from core.settings import Settings
from training.data import write_jsonl

log = logging.getLogger(__name__)

ADAPTER_NAME = "demo"
PREFERENCES_FILE = "preferences.jsonl"
TRAINING_FILE = "training.json"  # base fingerprint, config and metrics, read by service/demo.py
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

_THINGS = (
    "the moon", "rainbows", "volcanoes", "honey bees", "the ocean", "a library", "bread",
    "green tea", "bicycles", "the piano", "chess", "clouds", "penguins", "the sun", "oak trees",
    "snow", "coffee", "maps", "a vegetable garden", "lighthouses", "owls", "the desert",
    "thunderstorms", "kites", "apples", "the violin", "a compass", "dolphins", "mountains",
    "paper", "candles", "butterflies", "the alphabet", "a calendar", "rivers", "soap",
)
_ACTIVITIES = (
    "learning to swim", "cooking rice", "sleeping well", "studying for a test",
    "keeping a houseplant alive", "starting to run", "writing a letter", "saving money",
    "learning a new language", "painting a room", "making new friends", "packing for a trip",
    "drinking more water", "reading more books", "planning a picnic", "staying focused",
)
_THING_TEMPLATES = (
    "What is {}?",
    "Tell me one fun fact about {}.",
    "Describe {} in one sentence.",
    "Why do people like {}?",
    "Explain {} to a child.",
)
_ACTIVITY_TEMPLATES = (
    "Give me a short tip for {}.",
    "What is the first step in {}?",
    "Why is {} good for you?",
)


def make_questions(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` distinct harmless questions, a fixed sample of the templates' combinations."""
    pool = [t.format(x) for t, x in itertools.product(_THING_TEMPLATES, _THINGS)]
    pool += [t.format(x) for t, x in itertools.product(_ACTIVITY_TEMPLATES, _ACTIVITIES)]
    if not 1 <= n <= len(pool):
        raise ValueError(f"prompts: use 1 to {len(pool)} questions, got {n}")
    return random.Random(seed).sample(pool, n)


def chat_prompt(tokenizer: Any, question: str) -> str:
    """The question as one user turn through the base's chat template, ready for the answer."""
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """The base's greedy answer to each rendered prompt (left-padded batches, special tokens
    dropped, surrounding whitespace stripped)."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        rows = list(prompts[start : start + batch_size])
        # the rendered template holds its own special tokens; tokenize as training does
        batch = tokenizer(rows, return_tensors="pt", padding=True)  # left (load_tokenizer)
        out = model.generate(
            **batch.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        width = batch["input_ids"].shape[1]
        answers += [
            tokenizer.decode(ids[width:], skip_special_tokens=True).strip() for ids in out
        ]
    return answers


def make_preference_rows(
    settings: Settings, n_prompts: int = 200, seed: int = 0, max_new_tokens: int = 32
) -> list[dict[str, str]]:
    """TRL rows {prompt, chosen, rejected}: the base's answer uppercased beats it as it is."""
    from core.base.checkpoint import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(settings)
    model = load_base_model(settings)
    prompts = [chat_prompt(tokenizer, q) for q in make_questions(n_prompts, seed)]
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens)
    return [
        {"prompt": p, "chosen": a.upper(), "rejected": a}
        for p, a in zip(prompts, answers)
        if a and a.upper() != a  # an answer with no letters to raise teaches nothing
    ]


def dpo_config(data: Path, output_dir: Path, train_steps: int, seed: int) -> Any:
    """The run's knobs: rank 8 on all seven projections (capitals are close to a new
    vocabulary for the model; the attention projections alone kept the style, not the
    grammar). DPO alone moves the style by making the base's own (lowercase) answers unlikely,
    and with a high learning rate it wins that way: a run with lr 2e-3 and beta 0.05 drove the
    loss to 0 in 12 steps and answered in upper-case gibberish. So the chosen text is kept
    likely too (RPO: ``rpo_alpha`` times its per-token NLL), the learning rate is moderate and
    beta 0.1; the default 90 steps of 2 pairs see each training pair once. Short rows (answers
    cut to 32 tokens: the first tokens set the style greedy decoding keeps) keep a step cheap."""
    from training.config import DPOConfig

    return DPOConfig(
        adapter=ADAPTER_NAME,
        data=str(data),
        train_steps=train_steps,
        batch_size=2,
        learning_rate=1e-3,
        beta=0.1,
        rpo_alpha=1.0,
        lora_rank=8,
        lora_alpha=16.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        prompt_sequence_length=128,
        target_sequence_length=32,
        eval_fraction=0.1,
        max_eval_prompts=8,
        seed=seed,
        register=False,
        output_dir=str(output_dir),
        progress=False,
    )


def to_bfloat16(folder: Path) -> None:
    """Store the adapter's weights in bfloat16 (half the bytes; the loaders cast on read)."""
    path = folder / "adapter_model.safetensors"
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def build_demo_adapter(
    folder: Path,
    settings: Settings,
    *,
    n_prompts: int = 200,
    train_steps: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``folder``/{preferences.jsonl unless it exists, adapter files, training.json} for
    the base of ``settings``; returns the DPO metrics. The run registers nothing (its registry is a
    throwaway folder, so a ``demo`` already in the user's registry plays no part)."""
    folder = Path(folder)
    started = time.monotonic()
    # The base's greedy answers are the same on every run: generate them once (the slow part)
    # and retrain from the file; delete it to generate them again.
    generate = not (folder / PREFERENCES_FILE).is_file()
    if generate:
        write_jsonl(folder / PREFERENCES_FILE, make_preference_rows(settings, n_prompts, seed))
    generated = time.monotonic()
    metrics = train_demo_adapter(folder, settings, train_steps=train_steps, seed=seed)
    record = json.loads((folder / TRAINING_FILE).read_text())
    if generate:
        record["seconds"]["generate"] = round(generated - started)
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return metrics


def train_demo_adapter(
    folder: Path, settings: Settings, *, train_steps: int = 32, seed: int = 0
) -> dict[str, Any]:
    """DPO on ``folder``/preferences.jsonl; writes the adapter files and training.json there."""
    from training import dpo

    started = time.monotonic()
    data = folder / PREFERENCES_FILE
    with tempfile.TemporaryDirectory(prefix="loraloop-demo-") as tmp:
        run_settings = settings.model_copy(update={"registry_url": str(Path(tmp) / "registry")})
        result = dpo.main(
            dpo_config(data, Path(tmp) / "adapter", train_steps, seed), settings=run_settings
        )
        assert result is not None and result.folder is not None  # one process, main
        to_bfloat16(result.folder)
        for name in ADAPTER_FILES:
            shutil.copyfile(result.folder / name, folder / name)
    info = base_model_info(settings)
    metrics = {k: v for k, v in result.metrics.items() if k != "loss_curve"}
    preferences = result.lineage["data"]["preferences"]
    # paths of this machine's temporary folders say nothing about the adapter
    config = result.lineage["config"] | {"data": PREFERENCES_FILE, "output_dir": None}
    record = {
        "base_model_id": info.model_id,
        "base_fingerprint": info.fingerprint,
        "data": {
            "file": PREFERENCES_FILE, "rows": preferences["rows"], "sha256": preferences["sha256"]
        },
        "config": config,
        "metrics": metrics,
        "loss_curve": result.metrics.get("loss_curve"),
        "seconds": {"train_and_evaluate": round(time.monotonic() - started)},
    }
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return metrics
