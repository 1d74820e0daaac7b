"""Drawing sampled tokens: the engine's inverse-CDF ``draw`` against ``torch.multinomial``.

    python -m bench.sampling [--rows 32] [--rounds 5] [--threads 2]

Both draw one token per row from the same softmax, each row with its own seeded generator (as
the engine does for requests with their own seeds), for the vocabularies of the 58M bench
Llama (32,000) and SmolLM2 (49,152). The variants alternate within each round and the ratio
is the median of the per-round ratios, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from service.engine.sampling import draw


def per_step_ms(fn, probs: torch.Tensor, repeats: int) -> float:
    """Median time of drawing one token for every row of ``probs``, in ms."""
    generators = [torch.Generator().manual_seed(row) for row in range(probs.shape[0])]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for row, generator in enumerate(generators):
            fn(probs[row], generator)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def multinomial(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=generator)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="sampled rows per decode step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one token for each of {args.rows} rows, ms per decode step (median of rounds)")
    print(f"{'vocabulary':>10}  {'multinomial':>11}  {'draw':>6}  {'multinomial / draw':>18}")
    for vocab in (32_000, 49_152):
        logits = torch.randn(args.rows, vocab, generator=torch.Generator().manual_seed(0))
        probs32 = logits.softmax(-1)  # what torch.multinomial was given
        probs64 = probs32.double()  # what the engine gives draw
        slow, fast = [], []
        for _ in range(args.rounds):
            slow.append(per_step_ms(multinomial, probs32, 5))
            fast.append(per_step_ms(draw, probs64, 5))
        ratio = statistics.median(s / f for s, f in zip(slow, fast, strict=True))
        print(
            f"{vocab:>10}  {statistics.median(slow):>11.2f}  {statistics.median(fast):>6.2f}"
            f"  {ratio:>17.1f}x"
        )


if __name__ == "__main__":
    main()
