"""An in-memory Kubernetes for the runner tests: objects by name, pods by label, and the calls
the runner made. Tests drive the objects' status as the Job/JobSet controllers would."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from training.jobs.kubernetes.gateway import AlreadyExists, GatewayError


@dataclass
class FakeGateway:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobsets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # pod name -> its log
    creates: list[str] = field(default_factory=list)  # names, one per create call
    deletes: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, propagation)

    # --- the Gateway protocol ---

    def create_job(self, body: dict[str, Any]) -> None:
        self._create(self.jobs, body)

    def read_job(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    def delete_job(self, name: str, propagation_policy: str) -> None:
        self._delete(self.jobs, "Job", name, propagation_policy)

    def create_jobset(self, body: dict[str, Any]) -> None:
        self._create(self.jobsets, body)

    def read_jobset(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobsets.get(name))

    def delete_jobset(self, name: str, propagation_policy: str) -> None:
        self._delete(self.jobsets, "JobSet", name, propagation_policy)

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        return [
            copy.deepcopy(pod)
            for pod in self.pods
            if wanted.items() <= pod["metadata"]["labels"].items()
        ]

    def read_pod_log(self, pod: str, container: str, tail_lines: int) -> str:
        assert container == "trainer"
        if pod not in self.logs:
            raise GatewayError(f"read the log of pod {pod}: 400 Bad Request", 400)
        return "\n".join(self.logs[pod].splitlines()[-tail_lines:])

    # --- what the controllers (and the tests) do ---

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        (self.jobs | self.jobsets)[name]["status"] = status

    def add_pod(
        self,
        owner: str,
        suffix: str,
        phase: str,
        *,
        terminated: dict[str, Any] | None = None,
        reason: str | None = None,
        log: str | None = None,
    ) -> None:
        """A pod of the object ``owner``, labelled as its template says."""
        obj = (self.jobs | self.jobsets)[owner]
        labels = _pod_template_labels(obj)
        status: dict[str, Any] = {"phase": phase}
        if reason:
            status["reason"] = reason
        if terminated:
            status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
        name = f"{owner}-{suffix}"
        self.pods.append({"metadata": {"name": name, "labels": labels}, "status": status})
        if log is not None:
            self.logs[name] = log

    def _create(self, store: dict[str, dict[str, Any]], body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        self.creates.append(name)
        if name in store:
            raise AlreadyExists(f"create {name}: 409 Conflict", 409)
        store[name] = copy.deepcopy(body)

    def _delete(self, store: dict[str, Any], kind: str, name: str, propagation: str) -> None:
        self.deletes.append((kind, name, propagation))
        if store.pop(name, None) is not None and propagation != "Orphan":
            owned = self.list_pods(f"loraloop.io/job-id={_job_id(name)}")
            self.pods = [p for p in self.pods if p not in owned]


def _pod_template_labels(obj: dict[str, Any]) -> dict[str, str]:
    spec = obj["spec"]
    if obj["kind"] == "JobSet":
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    return dict(spec["template"]["metadata"]["labels"])


def _job_id(run_name: str) -> str:
    return run_name.rsplit("-", 1)[0]
