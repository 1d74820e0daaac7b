"""Progress for a person and for the job system.

- a tqdm bar with the latest loss / reward / KL, on a terminal only;
- every logged point appended as one JSON line to ``metrics_file``
  (``{"step": 12, "phase": "train", "time": 1712..., "loss": 0.41, ...}``), and passed to an
  optional callback, so a job runner can follow a run while it trains;
- a final summary table (rich).

Only the main process reports; the others get a silent instance.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MetricsSink = Callable[[dict[str, Any]], None]
# Shown in the bar, in this order, when present.
_BAR_KEYS = ("loss", "accuracy", "reward", "kl", "margin", "kl_coeff")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Progress:
    def __init__(
        self,
        total: int,
        description: str,
        metrics_file: str | Path | None = None,
        sink: MetricsSink | None = None,
        enabled: bool = True,
        show_bar: bool = True,
    ):
        self.enabled = enabled
        self.metrics_file = Path(metrics_file) if metrics_file and enabled else None
        if self.metrics_file:
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        self.sink = sink if enabled else None
        self.history: list[dict[str, Any]] = []
        # tqdm's disable=None hides the bar when stderr is not a terminal (job logs stay clean)
        self.bar = tqdm(
            total=total,
            desc=description,
            unit="step",
            dynamic_ncols=True,
            disable=(not enabled or not show_bar) or None,
            file=sys.stderr,
            leave=False,
        )

    def log(self, step: int, phase: str = "train", **metrics: Any) -> dict[str, Any]:
        """Record one point of the series (all processes may call; only the main one writes)."""
        record = {"step": step, "phase": phase, "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        self.history.append(record)
        if self.metrics_file:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.sink:
            self.sink(record)
        if phase == "train":
            shown = {k: f"{record[k]:.4g}" for k in _BAR_KEYS if isinstance(record.get(k), float)}
            self.bar.set_postfix(shown, refresh=False)
        log.debug("%s step %s: %s", phase, step, metrics)
        return record

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()

    def series(self, key: str, phase: str = "train") -> list[float]:
        return [r[key] for r in self.history if r["phase"] == phase and r.get(key) is not None]

    def curve(self, key: str, phase: str = "train", points: int = 20) -> list[list[float]]:
        """[[step, value], ...] of ``key``, thinned to about ``points`` entries (the last kept),
        small enough to store in a version's metrics."""
        rows = [r for r in self.history if r["phase"] == phase and r.get(key) is not None]
        stride = max(1, -(-len(rows) // points))
        kept = rows[::stride] + ([rows[-1]] if rows and (len(rows) - 1) % stride else [])
        return [[r["step"], round(r[key], 5)] for r in kept]


def summary_table(title: str, metrics: Mapping[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            text = f"{value:.4f}"
        elif isinstance(value, (dict, list)):
            continue
        else:
            text = str(value)
        table.add_row(key, text)
    return table


def print_summary(title: str, metrics: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(summary_table(title, metrics))
