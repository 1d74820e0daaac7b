"""A projection's product for the few rows of a decode step, in the form the CPU's BLAS runs
fastest.

MKL's sgemm on this project's CPU (2 cores of an AMD EPYC), timed on the 58M bench Llama's 56
layer projections together and on its [32000, 512] LM head (``python -m bench.products``;
``docs/performance.md``, "Products of few rows"), is fastest for a decode step's rows when

- the [out, in] weight is the left operand, ``(W x^T)^T``: against ``x W^T`` (``nn.Linear``'s
  order), the layers run 1.3-1.6x faster at 2-4 rows, 1.1-1.3x at 24-64, about even at 8-16,
  and about 10% slower from 128 rows (a prefill chunk), where they stay ``nn.Linear``; the
  LM head runs 1.4-3.5x faster at every row count measured (1-128);
- the rows come in whole groups of 8 past 8 rows: 15 rows cost as much as 24 (the left-over
  rows take a slow path), so they are padded with zero rows (15 -> 16: 1.5-1.8x faster);
- and, for the LM head, a single row is computed as two: MKL's matrix-vector path reads its
  65 MB at two thirds of the speed. The layers' matrices (1-2.8 MB each) run as fast as
  ``nn.Linear`` at 1 row, so there they do.

Padding changes no row's result beyond float rounding. On a GPU both operand orders are one
cuBLAS call, and padding or the copy back would be kernel launches of their own: there the
products run as ``nn.Linear`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEFT_OPERAND_MAX_ROWS = 64  # the layers' products beyond: x W^T


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for ``x`` [..., in]: [..., out], contiguous."""
    rows = x.numel() // x.shape[-1]
    if x.device.type != "cpu" or not 1 < rows <= LEFT_OPERAND_MAX_ROWS:
        return F.linear(x, layer.weight, layer.bias)
    y = left_product(layer.weight, x.reshape(rows, x.shape[-1])).contiguous()
    if layer.bias is not None:
        y += layer.bias
    return y.view(*x.shape[:-1], y.shape[-1])


def left_product(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x W^T`` [rows, out] of ``x`` [rows, in], computed as ``(W x^T)^T`` (a transposed
    view), its rows padded as the module's docstring says when on the CPU."""
    rows = x.shape[0]
    padded = padded_rows(rows) if x.device.type == "cpu" else rows
    if padded > rows:
        x = torch.cat((x, x.new_zeros(padded - rows, x.shape[1])))
    return torch.mm(weight, x.T)[:, :rows].T


def padded_rows(rows: int) -> int:
    """How many rows MKL computes ``(W x^T)^T`` fastest for ``rows``: 2 for 1, as many up
    to 8, then the next multiple of 8."""
    if rows == 1:
        return 2
    return rows if rows <= 8 else -(-rows // 8) * 8
