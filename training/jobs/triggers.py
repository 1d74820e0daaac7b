"""Automatic retraining: ``job_triggers`` in settings, per use case, off by default.

A trigger is due when its use case has no queued or running job and, since the use case's last
job was created (ever, if none), ``after_feedback`` new feedback records arrived, or
``every_seconds`` passed with at least one new record (nothing new, nothing to learn).
"""

from __future__ import annotations

import logging
from datetime import datetime

from core.errors import InvalidRequest
from core.job_spec import plan_job
from core.settings import JobTrigger, Settings
from core.store import Job, Store
from core.store.models import utcnow

log = logging.getLogger(__name__)


def is_due(trigger: JobTrigger, new_feedback: int, last_created: datetime | None, now: datetime) -> bool:
    if trigger.after_feedback is not None and new_feedback >= trigger.after_feedback:
        return True
    if trigger.every_seconds is not None and new_feedback > 0:
        return last_created is None or (now - last_created).total_seconds() >= trigger.every_seconds
    return False


def fire_triggers(settings: Settings, store: Store, now: datetime | None = None) -> list[Job]:
    """Queue a job for every trigger that is due; the jobs queued."""
    now = now or utcnow()
    queued = []
    for use_case, trigger in settings.job_triggers.items():
        if store.job_queries.has_open_job(use_case):
            continue
        last = store.job_queries.last_created(use_case)
        since = last.created_at if last is not None else None
        if not is_due(trigger, store.job_queries.feedback_since(use_case, since), since, now):
            continue
        try:
            plan_job(trigger.kind, use_case, trigger.params)
        except InvalidRequest as e:
            log.error("job trigger of %s is misconfigured, not firing: %s", use_case, e)
            continue
        job = store.jobs.create(
            trigger.kind, use_case, trigger.params, max_attempts=settings.job_max_attempts
        )
        log.info("trigger queued %s job %s for %s", trigger.kind, job.id, use_case)
        queued.append(job)
    return queued
