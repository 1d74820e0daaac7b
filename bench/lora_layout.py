"""The LoRA update's two products in the engine's layout against the transposed one.

    python -m bench.lora_layout [--rows 32] [--rounds 5] [--threads 2]

``add_update`` (service/engine/lora.py) computes each row's ``(A x^T)^T B^T`` with A kept as
[rows, r, in]; the layout it replaced kept A^T [rows, in, r] and computed ``x A^T B^T``. Both
run over the q/k/v/o projections of the 58M bench Llama (8 layers x 4, in = out = 512, rank
8), every row with its own A and B as in a batch of 32 distinct adapters: 32 MB per pass, more
than the caches hold, as in a real decode step. Decode (1 token per row) and a prefill chunk
(40 tokens per row) are timed; the variants alternate within each round, and each ratio is
the median of the per-round ratios, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from service.engine.lora import add_update

LAYERS, HIDDEN, RANK = 32, 512, 8


def per_projection_us(update, repeats: int = 20) -> float:
    """Median over ``repeats`` passes of the time per projection, in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        update()
        times.append((time.perf_counter() - start) / LAYERS * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="rows, each with its own adapter")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = args.rows
    A = [torch.randn(rows, RANK, HIDDEN, generator=g) for _ in range(LAYERS)]  # the engine's
    A_t = [a.transpose(1, 2).contiguous() for a in A]  # the layout it replaced
    B_t = [torch.randn(rows, RANK, HIDDEN, generator=g) for _ in range(LAYERS)]
    scaling = torch.full((rows,), 2.0)
    print(f"{rows} rows x {LAYERS} projections, rank {RANK}: us per projection (median of rounds)")
    print(f"{'tokens per row':>14}  {'x A^T (before)':>14}  {'A x^T (now)':>11}  {'before / now':>12}")
    for tokens in (1, 40):
        x = torch.randn(rows, tokens, HIDDEN, generator=g)
        y = torch.zeros(rows, tokens, HIDDEN)

        def now() -> None:
            for a, b in zip(A, B_t, strict=True):
                add_update(x, y, (a, b, scaling))

        def before() -> None:
            for a_t, b in zip(A_t, B_t, strict=True):
                y.addcmul_(torch.bmm(torch.bmm(x, a_t), b), scaling[:, None, None])

        old, new = [], []
        for _ in range(args.rounds):
            old.append(per_projection_us(before))
            new.append(per_projection_us(now))
        ratio = statistics.median(o / n for o, n in zip(old, new, strict=True))
        print(f"{tokens:>14}  {statistics.median(old):>14.1f}  {statistics.median(new):>11.1f}  {ratio:>11.2f}x")


if __name__ == "__main__":
    main()
