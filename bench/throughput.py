"""Tokens/s of the engine against ``generate``, peft and a naive server, measured side by side.

The throughputs are measured in interleaved rounds on the same model and prompts (one round
runs every measurement once, back to back), and each ratio is taken within a round, then the
median over the rounds the rest of the machine left quiet: on a shared machine a burst of
other work skews one pair of measurements, not all of them (see ``Rate``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple, Self

import torch

from service.engine import Engine, SamplingParams


class Rate(NamedTuple):
    """Throughput by the wall clock and by this process's CPU time (times the thread count, so
    both agree on an idle machine), and how many cores OTHER processes kept busy meanwhile
    (from /proc/stat): rounds disturbed by other jobs can be told apart."""

    wall: float
    cpu: float
    foreign: float


def busy_seconds() -> float:
    """CPU seconds all processes spent busy since boot (Linux); 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Meter:
    threads = 2

    def __enter__(self) -> Self:
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), busy_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.busy = busy_seconds() - self.busy

    def rate(self, tokens: int) -> Rate:
        foreign = max(0.0, (self.busy - self.cpu) / self.wall)
        return Rate(tokens / self.wall, tokens / self.cpu * self.threads, foreign)


def greedy(model, prompts: list[list[int]], new: int, **kwargs) -> None:
    """Exactly ``new`` greedy tokens for each of ``prompts`` (one length), in one batch."""
    ids = torch.tensor(prompts)
    model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=3,  # never used: the prompts have one length and no row stops early
        **kwargs,
    )


@torch.no_grad()
def bench_generate(model, prompts: list[list[int]], new: int, **kwargs) -> Rate:
    with Meter() as meter:
        greedy(model, prompts, new, **kwargs)
    return meter.rate(len(prompts) * new)


@torch.no_grad()
def bench_naive(peft_model, prompts: list[list[int]], names: list[str], new: int) -> Rate:
    with Meter() as meter:
        for ids, name in zip(prompts, names, strict=True):
            peft_model.set_adapter(name)
            greedy(peft_model, [ids], new)
    return meter.rate(len(prompts) * new)


async def bench_engine(engine: Engine, prompts, adapters, new: int) -> Rate:
    params = SamplingParams(max_tokens=new, temperature=0, ignore_eos=True)
    with Meter() as meter:
        done = await asyncio.gather(
            *[engine.complete(p, a, params) for p, a in zip(prompts, adapters, strict=True)]
        )
    return meter.rate(sum(c.usage.completion_tokens for c in done))


THROUGHPUTS = {
    "generate_base_1": "generate base, batch 1",
    "engine_base_1": "engine base only, 1 request",
    "generate_base_32": "generate base, batch 32",
    "peft_mixed_32": "peft mixed, 32 adapters, batch 32",
    "naive_one_at_a_time": "naive server (one request at a time, set_adapter)",
    "engine_mixed_32": "engine mixed, 32 requests / 32 adapters",
    "engine_base_32": "engine base only, 32 requests",
}
QUIET = 0.25  # cores kept busy by other processes below which a round counts as quiet
RATIOS = [  # numerator, denominator, target (None: no stated target)
    ("engine_mixed_32", "generate_base_32", 0.9),
    ("engine_mixed_32", "peft_mixed_32", 1.8),
    ("engine_mixed_32", "naive_one_at_a_time", 9.0),
    ("engine_mixed_32", "engine_base_32", 0.9),
    ("engine_base_1", "generate_base_1", None),
]


def measure_rounds(
    measure: Callable[[], dict[str, Rate]], rounds: int, max_rounds: int
) -> dict[str, list[Rate]]:
    """Call ``measure`` (one round: every throughput once) ``rounds`` times, and more, up to
    ``max_rounds``, until two rounds were quiet."""
    measured: dict[str, list[Rate]] = {name: [] for name in THROUGHPUTS}

    def quiet_rounds() -> int:
        return sum(max(x.foreign for x in r) < QUIET for r in zip(*measured.values()))

    done = 0
    while done < rounds or (quiet_rounds() < 2 and done < max_rounds):
        done += 1
        for name, rate in measure().items():
            measured[name].append(rate)
    return measured


def summarize(rounds: dict[str, list[Rate]]) -> dict:
    """Medians and bests per throughput; per ratio, the median of the per-round ratios over the
    rounds in which other processes kept less than QUIET cores busy during both measurements
    (all rounds if none was quiet)."""
    results: dict = {"rounds": {k: [r._asdict() for r in v] for k, v in rounds.items()}}
    for name, rates in rounds.items():
        results[f"{name}_wall"] = statistics.median(r.wall for r in rates)
        results[f"{name}_wall_best"] = max(r.wall for r in rates)
        results[f"{name}_cpu"] = statistics.median(r.cpu for r in rates)
    for num, den, _ in RATIOS:
        pairs = list(zip(rounds[num], rounds[den], strict=True))
        quiet = [(a, b) for a, b in pairs if max(a.foreign, b.foreign) < QUIET]
        used = quiet or pairs
        results[f"{num}/{den}_wall"] = statistics.median(a.wall / b.wall for a, b in used)
        results[f"{num}/{den}_cpu"] = statistics.median(a.cpu / b.cpu for a, b in used)
        results[f"{num}/{den}_rounds"] = len(quiet)
    return results


def report_throughput(r: dict, threads: int, new_tokens: int, title: str) -> None:
    rounds = len(r["rounds"]["generate_base_32"])
    print(
        f"\n{title}\nthroughput, tokens/s ({threads} threads, 32-token prompts, {new_tokens} new "
        f"tokens; median of {rounds} interleaved rounds)"
    )
    print(f"  {'':<56} {'wall':>8} {'best':>8} {'CPU time':>9}")
    for key, name in THROUGHPUTS.items():
        wall, best, cpu = r[key + "_wall"], r[key + "_wall_best"], r[key + "_cpu"]
        print(f"  {name:<56} {wall:8.1f} {best:8.1f} {cpu:9.1f}")
    print(
        f"\nratios: median over quiet rounds of per-round ratios       wall   CPU time   target"
        f"   quiet rounds (other jobs < {QUIET} cores)"
    )
    for num, den, target in RATIOS:
        wall, cpu = r[f"{num}/{den}_wall"], r[f"{num}/{den}_cpu"]
        goal = "-" if target is None else f">= {target}"
        verdict = "" if target is None else "ok" if wall >= target else "MISSED"
        name = f"{num.replace('_', '-')} / {den.replace('_', '-')}"
        quiet = r[f"{num}/{den}_rounds"] or f"none (all {len(r['rounds'][num])} used)"
        print(f"  {name:<55} {wall:6.2f} {cpu:9.2f}   {goal:<7} {verdict:<6}  {quiet}")
    foreign = [x["foreign"] for v in r["rounds"].values() for x in v]
    print(f"  (other processes kept {min(foreign):.2f}-{max(foreign):.2f} cores busy meanwhile)")
