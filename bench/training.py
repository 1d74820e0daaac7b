"""PPO on one shared base copy against the classic four separate models, side by side.

    python -m bench.training [--steps 3] [--batch-size 8] [--new-tokens 16] [--threads 1]
                             [--json FILE]

Both layouts run the same PPO code (training.ppo.collect / update) on the same prompts:

- shared:   ONE base copy; policy LoRA + value head, reference = adapters disabled,
            reward = a reward LoRA + score head (loraloop's design);
- separate: FOUR base copies, as classic RLHF stacks hold them: policy (+ LoRA), a frozen
            reference, a reward model (+ LoRA + score head) and a value model (its own copy
            + LoRA + value head, trained).

Each layout runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
Reported: parameter bytes held, peak RSS, seconds per PPO iteration and iterations/s (best of
``--steps`` after one warm-up), and the ratios. Model: Llama, 8 layers, hidden 512, 8 heads,
intermediate 1376, vocab 32000 (58M parameters), random weights, float32 on the CPU; LoRA r=8 on
q/k/v/o.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from peft import get_peft_model
from torch import Tensor, nn

from bench.models import build_bench_llama
from core.base.checkpoint import load_base_model, load_tokenizer
from core.settings import Settings
from training import ppo
from training.batching import encode_prompts
from training.config import PPOConfig
from training.shared_base import (
    POLICY,
    REWARD,
    LoraSpec,
    SharedBase,
    lora_config,
    position_ids_from_mask,
)
from training.synthetic import make_prompt_rows

SPEC = LoraSpec(r=8, alpha=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


class FourModels(nn.Module):
    """The classic layout behind SharedBase's interface, so PPO's code runs unchanged."""

    def __init__(self, settings: Settings):
        super().__init__()
        self.tokenizer = load_tokenizer(settings)
        policy = load_base_model(settings)
        self.policy = get_peft_model(policy, lora_config("policy", SPEC))
        self.reference = load_base_model(settings)
        self.reward = SharedBase(load_base_model(settings), self.tokenizer)
        self.reward.add_adapter(REWARD, lora_config("reward", SPEC), trainable=False)
        # a PeftModel (typed by peft as PeftModel | PeftMixedModel, which nn.Module's
        # attribute typing then loses)
        self.critic: Any = get_peft_model(load_base_model(settings), lora_config("policy", SPEC))
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        self._active: str | None = POLICY

    @property
    def model(self) -> nn.Module:
        return self.policy.get_base_model() if self._active == POLICY else self.reference

    @contextlib.contextmanager
    def adapter(self, name: str | None) -> Iterator[None]:
        previous, self._active = self._active, name
        try:
            yield
        finally:
            self._active = previous

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, heads=("logits",)
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if "scores" in heads:
            out["scores"] = self.reward(input_ids, attention_mask, heads=("scores",))["scores"]
        positions = position_ids_from_mask(attention_mask)
        if "logits" in heads:
            out["logits"] = self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
            ).logits
        if "values" in heads:  # the critic: a second full forward pass on its own copy
            hidden = (
                self.critic.get_base_model()
                .model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
                .last_hidden_state
            )
            out["values"] = self.value_head(hidden).squeeze(-1)
        return out

    def scores(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        with self.reward.adapter(REWARD):
            return self.reward.scores(input_ids, attention_mask)


def shared_models(settings: Settings) -> SharedBase:
    shared = SharedBase(load_base_model(settings), load_tokenizer(settings))
    shared.add_adapter(REWARD, lora_config("reward", SPEC), trainable=False)
    shared.add_adapter(POLICY, lora_config("policy", SPEC))
    shared.add_value_head()
    return shared


def parameter_bytes(module: nn.Module) -> int:
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def run_layout(
    layout: str, model_dir: Path, steps: int, batch_size: int, new_tokens: int
) -> dict[str, Any]:
    """One layout in this process: build, one warm-up iteration, ``steps`` timed iterations."""
    settings = Settings(
        data_dir=model_dir.parent / "data", base_model=str(model_dir), device="cpu", dtype="float32"
    )
    torch.manual_seed(0)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # FourModels offers SharedBase's interface without being one: PPO's code takes either
    models = cast(
        SharedBase, shared_models(settings) if layout == "shared" else FourModels(settings)
    )
    config = PPOConfig(
        adapter="bench",
        prompts="unused",
        reward="bench-rm",
        batch_size=batch_size,
        num_minibatches=2,
        ppo_epochs=2,
        target_sequence_length=new_tokens,
        learning_rate=1e-4,
    )
    params = models.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    tok = models.tokenizer
    prompts = encode_prompts(
        tok, [r["prompt"] for r in make_prompt_rows(batch_size * (steps + 1))], "", 64
    )
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        models.eval()
        exp = ppo.collect(
            models, prompts[step * batch_size : (step + 1) * batch_size], config, 0.1, seed=step
        )
        models.train()
        ppo.update(models, params, optimizer, exp, config, seed=step)
        if step:  # the first iteration warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return {
        "layout": layout,
        "parameter_mb": parameter_bytes(models) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_start) / 1024,
        "seconds_per_iteration": min(times),
        "worst_seconds_per_iteration": max(times),
        "iterations_per_s": 1.0 / min(times),
        "trainable_parameters": sum(p.numel() for p in params),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed PPO iterations per layout")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--layout", choices=["shared", "separate"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.layout:  # child process: one layout, JSON on stdout
        result = run_layout(
            args.layout, args.model_dir, args.steps, args.batch_size, args.new_tokens
        )
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        model_dir = build_bench_llama(Path(tmp) / "model")
        results = {}
        for layout in ("shared", "separate"):
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.training",
                    "--layout",
                    layout,
                    "--model-dir",
                    str(model_dir),
                    "--steps",
                    str(args.steps),
                    "--batch-size",
                    str(args.batch_size),
                    "--new-tokens",
                    str(args.new_tokens),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[layout] = json.loads(child.stdout.strip().splitlines()[-1])
    shared, separate = results["shared"], results["separate"]
    ratios = {
        "parameter_memory_separate_over_shared": separate["parameter_mb"] / shared["parameter_mb"],
        "peak_rss_separate_over_shared": separate["peak_rss_mb"] / shared["peak_rss_mb"],
        "model_rss_separate_over_shared": separate["model_rss_mb"] / shared["model_rss_mb"],
        "speed_shared_over_separate": shared["iterations_per_s"] / separate["iterations_per_s"],
    }
    print(
        f"PPO, batch {args.batch_size}, {args.new_tokens} new tokens, 2 epochs x 2 minibatches, "
        f"{args.threads} threads, best of {args.steps}"
    )
    header = ("layout", "params MB", "peak RSS MB", "+models MB", "s/iter", "(worst)", "iter/s")
    widths = (10, 11, 13, 12, 9, 9, 9)
    print(header[0].ljust(widths[0]) + "".join(h.rjust(w) for h, w in zip(header[1:], widths[1:])))
    for r in (shared, separate):
        print(
            f"{r['layout']:<10}{r['parameter_mb']:>11.0f}{r['peak_rss_mb']:>13.0f}{r['model_rss_mb']:>12.0f}"
            f"{r['seconds_per_iteration']:>9.2f}{r['worst_seconds_per_iteration']:>9.2f}{r['iterations_per_s']:>9.3f}"
        )
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
