"""A decode step's products as ``nn.Linear`` computes them against the engine's form.

    python -m bench.products [--rounds 7] [--threads 2]

``service/engine/products.py`` computes a few rows' ``x W^T`` as ``(W x^T)^T`` with the rows
padded past 8 to a multiple of 8 (the layers from 2 rows on; the LM head from 1, padded to 2). Timed on the 58M bench Llama's shapes, the weights
read from memory as in a real step: the 56 layer projections of its 8 layers together (q, k,
v, o 512 x 512; gate, up 1376 x 512; down 512 x 1376; 101 MB, the engine's ``linear``, copied
back to the usual layout) and its LM head (32000 x 512, 65 MB, the engine's ``left_product``,
a transposed view). For each row count the two forms alternate within each round; each ratio
is the median of the per-round ratios, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from bench.timing import median_ms
from service.engine.products import left_product, linear

LAYERS = 8
SHAPES = [(512, 512)] * 4 + [(1376, 512)] * 2 + [(512, 1376)]  # [out, in] per layer
ROWS = (1, 2, 4, 8, 12, 15, 16, 24, 31, 32, 40, 64, 128)


def step_products(projections, head, x) -> dict:
    """A step's products both ways, for its rows ``x`` (by input width)."""
    return {
        "layers_linear": lambda: [F.linear(x[m.in_features], m.weight) for m in projections],
        "layers_engine": lambda: [linear(m, x[m.in_features]) for m in projections],
        "head_linear": lambda: F.linear(x[512], head),
        "head_engine": lambda: left_product(head, x[512]),
    }


def ratio(times: dict[str, list[float]], part: str) -> float:
    """Median over rounds of nn.Linear's time / the engine's, for ``part``."""
    pairs = zip(times[f"{part}_linear"], times[f"{part}_engine"], strict=True)
    return statistics.median(a / b for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    projections = [torch.nn.Linear(i, o, bias=False) for _ in range(LAYERS) for o, i in SHAPES]
    head = torch.randn(32000, 512, generator=g)
    print("ms per step (median of rounds); nn.Linear / engine, median of per-round ratios")
    print(f"{'rows':>4}  {'layers: Linear':>14}  {'engine':>6}  {'ratio':>5}"
          f"  {'head: Linear':>12}  {'engine':>6}  {'ratio':>5}")
    for rows in ROWS:
        x = {i: torch.randn(rows, i, generator=g) for i in (512, 1376)}
        variants = step_products(projections, head, x)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, product in variants.items():
                product()  # warm
                times[name].append(median_ms(product, 5))
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"{rows:>4}  {med['layers_linear']:>14.1f}  {med['layers_engine']:>6.1f}  "
              f"{ratio(times, 'layers'):>4.2f}x  {med['head_linear']:>12.1f}  "
              f"{med['head_engine']:>6.1f}  {ratio(times, 'head'):>4.2f}x")


if __name__ == "__main__":
    main()
