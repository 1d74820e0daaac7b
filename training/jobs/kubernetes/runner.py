"""The ``kubernetes`` (batch/v1 Job) and ``kubernetes-jobset`` (JobSet) runners.

Each attempt at a job becomes one object named ``<job_id>-<attempt>``; its phase is read from
the object's status conditions, and a failure's reason from the pods when the object only
says "a pod failed" (OOMKilled says more than BackoffLimitExceeded). The runners keep no
state: a restarted worker finds its runs again by name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Self

import yaml

from core.settings import KubernetesRunnerSettings
from training.jobs.kubernetes.gateway import AlreadyExists, Gateway, GatewayError
from training.jobs.kubernetes.manifests import (
    CONTAINER,
    build_job,
    build_jobset,
    pod_selector,
    run_name,
)
from training.jobs.runner import Launch, RunPhase, RunStatus

log = logging.getLogger(__name__)

# Failure reasons that only say "a pod failed": the pods' own reasons say more.
_GENERIC_REASONS = {
    None, "BackoffLimitExceeded", "PodFailurePolicy", "FailedJobs", "ReachedMaxRestarts"
}


class _KubernetesRunner:
    """What both runners share: idempotent create, status, background delete, logs."""

    object_kind = ""  # "Job" | "JobSet", for messages

    def __init__(self, settings: KubernetesRunnerSettings, gateway: Gateway):
        self._settings = settings
        self._gateway = gateway
        self._template = load_pod_template(settings.pod_template_file)
        # Build one object now, so a missing image or a bad template fails at start-up.
        self._build(Launch(job_id="job-0", attempt=1, kind="check", use_case="check"))

    @classmethod
    def from_settings(cls, settings: KubernetesRunnerSettings) -> Self:
        """The runner on the real API (in-cluster or kubeconfig, from settings)."""
        from training.jobs.kubernetes.gateway import KubernetesGateway

        return cls(settings, KubernetesGateway.connect(settings))

    def launch(self, launch: Launch) -> None:
        body = self._build(launch)
        try:
            self._create(body)
        except AlreadyExists:  # submitted before (a retried call, a restarted worker)
            log.info("%s %s exists already", self.object_kind, run_name(launch))
            return
        log.info("created %s %s", self.object_kind, run_name(launch))

    def status(self, launch: Launch) -> RunStatus:
        obj = self._read(run_name(launch))
        if obj is None:
            return RunStatus(RunPhase.GONE, "NotFound")
        status = self._phase(obj)
        if status.phase is RunPhase.FAILED and status.reason in _GENERIC_REASONS:
            pod_reason = pod_failure_reason(self._gateway.list_pods(pod_selector(launch)))
            if pod_reason is not None:
                return RunStatus(RunPhase.FAILED, pod_reason)
        return status

    def cancel(self, launch: Launch) -> None:
        # Background propagation: the API's default for Jobs orphans their pods.
        self._delete(run_name(launch))
        log.info("deleted %s %s", self.object_kind, run_name(launch))

    def logs(self, launch: Launch, tail: int = 100) -> list[str]:
        """The last lines of the pod that failed first, else of node 0's pod."""
        try:
            pods = self._gateway.list_pods(pod_selector(launch))
            if not pods:
                return []
            pod = _failed_first(pods)[0]
            text = self._gateway.read_pod_log(pod["metadata"]["name"], CONTAINER, tail)
        except GatewayError as error:  # best effort: the pod may be gone or not started
            log.warning("no logs for %s: %s", run_name(launch), error)
            return []
        return text.splitlines()[-tail:]

    # --- what differs between a Job and a JobSet ---

    def _build(self, launch: Launch) -> dict[str, Any]:
        raise NotImplementedError

    def _create(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def _read(self, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    def _phase(self, obj: dict[str, Any]) -> RunStatus:
        raise NotImplementedError


class KubernetesJobRunner(_KubernetesRunner):
    """``job_runner = "kubernetes"``: one batch/v1 Job (one pod) per attempt."""

    object_kind = "Job"

    def _build(self, launch: Launch) -> dict[str, Any]:
        return build_job(launch, self._settings, self._template)

    def _create(self, body: dict[str, Any]) -> None:
        self._gateway.create_job(body)

    def _read(self, name: str) -> dict[str, Any] | None:
        return self._gateway.read_job(name)

    def _delete(self, name: str) -> None:
        self._gateway.delete_job(name, propagation_policy="Background")

    def _phase(self, obj: dict[str, Any]) -> RunStatus:
        return job_phase(obj)


class JobSetRunner(_KubernetesRunner):
    """``job_runner = "kubernetes-jobset"``: one JobSet (``nodes`` pods) per attempt."""

    object_kind = "JobSet"

    def _build(self, launch: Launch) -> dict[str, Any]:
        return build_jobset(launch, self._settings, self._template)

    def _create(self, body: dict[str, Any]) -> None:
        self._gateway.create_jobset(body)

    def _read(self, name: str) -> dict[str, Any] | None:
        return self._gateway.read_jobset(name)

    def _delete(self, name: str) -> None:
        self._gateway.delete_jobset(name, propagation_policy="Background")

    def _phase(self, obj: dict[str, Any]) -> RunStatus:
        return jobset_phase(obj)


def load_pod_template(path: Path | None) -> dict[str, Any] | None:
    """The user's PodTemplateSpec (YAML: ``metadata`` and ``spec``), or None without a file."""
    if path is None:
        return None
    template = yaml.safe_load(Path(path).read_text())
    if not isinstance(template, dict) or not set(template) <= {"metadata", "spec"}:
        raise ValueError(
            f"kubernetes.pod_template_file {path}: expected a PodTemplateSpec, a mapping with "
            "'metadata' and/or 'spec' (the 'template' part of a Job)"
        )
    return template


def job_phase(job: dict[str, Any]) -> RunStatus:
    """A batch/v1 Job's phase from its conditions (FailureTarget/SuccessCriteriaMet come first
    on 1.31+, while the last pods terminate) and its ready pods."""
    status = job.get("status") or {}
    true = _true_conditions(status)
    for kind in ("Failed", "FailureTarget"):
        if kind in true:
            return RunStatus(RunPhase.FAILED, true[kind].get("reason"))
    if "Complete" in true or "SuccessCriteriaMet" in true:
        return RunStatus(RunPhase.SUCCEEDED)
    if (job.get("spec") or {}).get("suspend") or "Suspended" in true:
        return RunStatus(RunPhase.PENDING)  # waiting for Kueue's admission
    # `ready` counts pods past their readiness (all running pods: ours have no probe).
    running = status.get("ready", status.get("active")) or 0
    return RunStatus(RunPhase.RUNNING if running > 0 else RunPhase.PENDING)


def jobset_phase(jobset: dict[str, Any]) -> RunStatus:
    """A JobSet's phase from its conditions and its child Jobs' readiness."""
    status = jobset.get("status") or {}
    true = _true_conditions(status)
    if "Failed" in true:
        return RunStatus(RunPhase.FAILED, true["Failed"].get("reason"))
    if "Completed" in true:
        return RunStatus(RunPhase.SUCCEEDED)
    if (jobset.get("spec") or {}).get("suspend") or "Suspended" in true:
        return RunStatus(RunPhase.PENDING)
    # A child Job is `ready` once all its pods are ready or done: every node has started.
    ready = sum(job.get("ready", 0) for job in status.get("replicatedJobsStatus") or [])
    return RunStatus(RunPhase.RUNNING if ready > 0 else RunPhase.PENDING)


def pod_failure_reason(pods: list[dict[str, Any]]) -> str | None:
    """Why the first failed pod failed: its own reason (Evicted), its container's (OOMKilled),
    else the container's exit code; None if no pod says."""
    for pod in _failed_first(pods):
        status = pod.get("status") or {}
        if status.get("phase") == "Failed" and status.get("reason"):
            return status["reason"]
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or (
                (container.get("lastState") or {}).get("terminated")
            )
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            reason = terminated.get("reason")
            if reason and reason != "Error":
                return reason
            return f"exit code {terminated['exitCode']}"
    return None


def _true_conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}


def _failed_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed pods first, then by name (node 0 first for a JobSet)."""
    return sorted(
        pods,
        key=lambda p: ((p.get("status") or {}).get("phase") != "Failed", p["metadata"]["name"]),
    )
