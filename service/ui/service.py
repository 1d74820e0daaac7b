"""What the dashboard shows, read from the registry, the engine and the store.

Jobs are read through the store (``Store.jobs``); the metric names plotted per job kind are in
``plots.PLOTS``. The adapter listing (with the engine's residency) is the adapters feature's,
injected as a function. Blocking: run in a thread.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from core.errors import InvalidRequest
from core.names import BASE_MODEL, AdapterVersion
from core.registry import Registry
from core.store import FeedbackSource, Job, Store
from core.store.stats import (
    DEFAULT_MIN_HUMAN_VOTES,
    DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND,
    human_win_verdict,
)
from service.adapters.protocol import AdapterPublic
from service.ui.plots import PLOTS, PlotSpec
from service.ui.protocol import Comparison, JobRow, Plot
from service.versions import fixed_version

JOBS_SHOWN = 50
GATE_KEYS = ("min_human_votes", "min_human_win_lower_bound")


class DashboardService:
    def __init__(
        self, store: Store, registry: Registry, list_adapters: Callable[[], list[AdapterPublic]]
    ):
        self.store = store
        self.registry = registry
        self.list_adapters = list_adapters  # AdapterService.list

    def adapter_list(self) -> list[AdapterPublic]:
        return self.list_adapters()

    def jobs(self) -> list[JobRow]:
        rows = []
        for job in self.store.jobs.list(limit=JOBS_SHOWN):
            first = self._plot(job, PLOTS[job.kind][0])
            rows.append(JobRow(job, [v for v in first.values if v is not None]))
        return rows

    def job(self, job_id: str) -> tuple[Job, list[Plot]]:
        job = self.store.jobs.get(job_id)
        return job, [self._plot(job, spec) for spec in PLOTS[job.kind]]

    def _plot(self, job: Job, spec: PlotSpec) -> Plot:
        for name in spec.names:
            points = self.store.jobs.metrics(job.id, name)
            if points:
                values = [p.value if math.isfinite(p.value) else None for p in points]
                return Plot(spec.title, name, [p.step for p in points], values)
        return Plot(spec.title, None, [], [])

    def comparisons(self, adapters: list[AdapterPublic]) -> list[Comparison]:
        """Every policy adapter whose candidate and production aliases point to two versions."""
        found = []
        for adapter in adapters:
            candidate, production = adapter.aliases.get("candidate"), adapter.aliases.get("production")
            if adapter.kind != "policy" or candidate is None or production is None or candidate == production:
                continue
            made = next((v for v in adapter.versions if v.version == candidate), None)
            rm_win_rate = made.metrics.get("win_rate") if made else None
            comparison = self.compare(
                AdapterVersion(adapter.name, candidate), AdapterVersion(adapter.name, production),
                rm_win_rate if isinstance(rm_win_rate, int | float) else None,
            )
            config = (made.lineage.get("config") or {}) if made else {}
            gates = config.get("gates") or {}
            asked = bool(config.get("promote")) and any(gates.get(k) is not None for k in GATE_KEYS)
            found.append(dataclasses.replace(comparison, automatic=asked))
        return found

    def compare(
        self, candidate: AdapterVersion | None, production: AdapterVersion | None,
        reward_model_win_rate: float | None = None,
    ) -> Comparison:
        if candidate == production:
            raise InvalidRequest("compare two different versions", param="b")
        named = candidate or production  # None only when both are the base model
        use_case = named.adapter if named is not None else None
        rate = self.store.stats.win_rate(candidate, production, use_case, source=FeedbackSource.HUMAN)
        thresholds, source = self.gate_thresholds(use_case)
        # The reward model's verdict: its judgements of these two versions' completions (model
        # feedback) when there are any, else the candidate's evaluation metric.
        judged = self.store.stats.win_rate(candidate, production, use_case, source=FeedbackSource.MODEL)
        rm_source = "evaluation"
        if judged.total:
            reward_model_win_rate, rm_source = judged.win_rate, f"{judged.total} judged pairs"
        return Comparison(
            adapter=use_case or BASE_MODEL, candidate=candidate, production=production,
            human=human_win_verdict(rate, **thresholds), gate_source=source,
            reward_model_win_rate=reward_model_win_rate, reward_model_source=rm_source,
        )

    def gate_thresholds(self, use_case: str | None) -> tuple[dict[str, Any], str]:
        """The human-win gate of the newest job of the use case that configures it, else the
        defaults; and a note saying which."""
        if use_case is not None:
            for job in self.store.jobs.list(use_case=use_case, limit=JOBS_SHOWN):
                # A round's gates belong to its policy stage; other kinds carry them at the top.
                stage = (job.params.get("policy") or {}) if job.kind == "round" else job.params
                gates = stage.get("gates") or {}
                if any(gates.get(k) is not None for k in GATE_KEYS):
                    return {
                        "min_votes": int(gates.get("min_human_votes") or DEFAULT_MIN_HUMAN_VOTES),
                        "min_lower_bound": float(
                            gates.get("min_human_win_lower_bound") or DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND
                        ),
                    }, f"gates of job {job.id}"
        return {
            "min_votes": DEFAULT_MIN_HUMAN_VOTES, "min_lower_bound": DEFAULT_MIN_HUMAN_WIN_LOWER_BOUND,
        }, "default gate (no job configures min_human_votes / min_human_win_lower_bound)"

    def version(self, ref: str, param: str) -> AdapterVersion | None:
        """A version to compare: 'name@N', or an alias as it points now; None for 'base'."""
        return fixed_version(self.registry, ref, param)
