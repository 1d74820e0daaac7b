"""Pure builders of the Kubernetes objects a run becomes: ``Launch`` + settings -> dict.

::

    kubernetes          batch/v1 Job  <job_id>-<attempt>
                          └─ 1 pod:  torchrun --standalone --nproc-per-node N -m training run-job ID
    kubernetes-jobset   jobset.x-k8s.io/v1alpha2 JobSet  <job_id>-<attempt>
                          └─ replicatedJob "node": 1 Indexed Job of M pods (one per node),
                             hostnames <jobset>-node-0-<i>.<jobset> (headless Service by JobSet)
                             torchrun --nnodes M --node-rank $(JOB_COMPLETION_INDEX)
                                      --rdzv-endpoint <jobset>-node-0-0.<jobset>:29400 ...

Names derive from the job id and attempt, so a second create of the same run answers 409.
Dicts use the API's camelCase field names; the gateway sends them as they are. A user's pod
template (YAML) is the base; the fields below are set over it (env, volumes and mounts are
merged by name, ours winning).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from core.settings import KubernetesRunnerSettings
from training.jobs.runner import Launch

CONTAINER = "trainer"  # the container that runs torchrun; a template may add sidecars
REPLICATED_JOB = "node"  # the JobSet's one replicated job: one pod per node
RDZV_PORT = 29400  # torchrun's rendezvous port on node 0
SHM_VOLUME = "dshm"

JOB_ID_LABEL = "loraloop.io/job-id"
ATTEMPT_LABEL = "loraloop.io/attempt"
KIND_LABEL = "loraloop.io/kind"
USE_CASE_LABEL = "loraloop.io/use-case"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

_JOB_ID = re.compile(r"job-[0-9a-f]{1,32}")


def run_name(launch: Launch) -> str:
    """The Job/JobSet name of one attempt: ``job-<hex>-<attempt>`` (a DNS-1035 label)."""
    # JobSet pod hostnames are <name>-node-0-<i>: 36 + 2 + 9 + 3 characters stay under 63.
    if not _JOB_ID.fullmatch(launch.job_id):
        raise ValueError(f"job id {launch.job_id!r}: expected 'job-' and up to 32 hex digits")
    if launch.attempt < 1:
        raise ValueError(f"attempt {launch.attempt}: attempts count from 1")
    return f"{launch.job_id}-{launch.attempt}"


def run_labels(launch: Launch) -> dict[str, str]:
    """Labels on the run's object and its pods (the use case is a valid label value)."""
    return {
        "app.kubernetes.io/managed-by": "loraloop",
        JOB_ID_LABEL: launch.job_id,
        ATTEMPT_LABEL: str(launch.attempt),
        KIND_LABEL: launch.kind,
        USE_CASE_LABEL: launch.use_case,
    }


def pod_selector(launch: Launch) -> str:
    """A label selector for the pods of one attempt (Job and JobSet alike)."""
    return f"{JOB_ID_LABEL}={launch.job_id},{ATTEMPT_LABEL}={launch.attempt}"


def job_command(launch: Launch, settings: KubernetesRunnerSettings) -> list[str]:
    """One node: torchrun picks a free local rendezvous itself."""
    return [
        "torchrun", "--standalone", "--nproc-per-node", str(settings.nproc_per_node),
        "-m", "training", "run-job", launch.job_id,
    ]


def jobset_command(launch: Launch, settings: KubernetesRunnerSettings) -> list[str]:
    """Several nodes: static rendezvous at node 0's stable hostname.

    Kubernetes expands ``$(JOB_COMPLETION_INDEX)`` from the env the Job controller injects
    into each indexed pod, so no shell is needed.
    """
    name = run_name(launch)
    # <jobset>-<replicated job>-<job index>-<pod index>.<subdomain>
    node0 = f"{name}-{REPLICATED_JOB}-0-0.{name}"
    return [
        "torchrun", "--nnodes", str(settings.nodes),
        "--nproc-per-node", str(settings.nproc_per_node),
        "--node-rank", "$(JOB_COMPLETION_INDEX)",
        "--rdzv-endpoint", f"{node0}:{RDZV_PORT}",
        "-m", "training", "run-job", launch.job_id,
    ]


def pod_template(
    launch: Launch,
    settings: KubernetesRunnerSettings,
    command: list[str],
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A PodTemplateSpec: ``base`` (the user's template) with our required fields set over it."""
    template = copy.deepcopy(dict(base or {}))
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **run_labels(launch)}
    spec = template.setdefault("spec", {})
    spec["restartPolicy"] = "Never"  # retries are the Job's/JobSet's and the store's, not kubelet's
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **settings.node_selector}
    if settings.tolerations:
        spec["tolerations"] = [*(spec.get("tolerations") or []), *settings.tolerations]
    if settings.shm_size:
        # Docker's 64 MB /dev/shm breaks NCCL and DataLoader workers; memory counts to the pod.
        shm = {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}}
        spec["volumes"] = _merge_named(spec.get("volumes"), [shm])
    spec["containers"] = _with_trainer(spec.get("containers") or [], launch, settings, command)
    return template


def build_job(
    launch: Launch, settings: KubernetesRunnerSettings, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``batch/v1`` Job of the ``kubernetes`` runner (one pod, one node)."""
    spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit,
        "template": pod_template(launch, settings, job_command(launch, settings), base),
    }
    _run_limits(spec, settings)
    if settings.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = settings.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(launch, settings),
        "spec": spec,
    }


def build_jobset(
    launch: Launch, settings: KubernetesRunnerSettings, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JobSet of the ``kubernetes-jobset`` runner (``settings.nodes`` pods, gang restart)."""
    name = run_name(launch)
    job_spec: dict[str, Any] = {
        "parallelism": settings.nodes,
        "completions": settings.nodes,
        "completionMode": "Indexed",  # JOB_COMPLETION_INDEX = node rank, stable hostnames
        # A pod retried alone would hang its peers in the rendezvous: any failure fails the
        # child Job, and the JobSet restarts every pod together (failurePolicy).
        "backoffLimit": 0,
        "template": pod_template(launch, settings, jobset_command(launch, settings), base),
    }
    if settings.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = settings.active_deadline_seconds
    spec: dict[str, Any] = {
        # The headless Service JobSet creates: stable DNS for the pods, ready or not.
        "network": {
            "enableDNSHostnames": True,
            "subdomain": name,
            "publishNotReadyAddresses": True,
        },
        "failurePolicy": {"maxRestarts": settings.max_restarts},
        "replicatedJobs": [
            {
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"metadata": {"labels": run_labels(launch)}, "spec": job_spec},
            }
        ],
    }
    _run_limits(spec, settings)
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": _metadata(launch, settings),
        "spec": spec,
    }


def _metadata(launch: Launch, settings: KubernetesRunnerSettings) -> dict[str, Any]:
    # No ownerReference to the server or worker pod: restarting them must not kill training.
    labels = run_labels(launch)
    if settings.kueue_queue:
        labels[KUEUE_QUEUE_LABEL] = settings.kueue_queue
    return {"name": run_name(launch), "namespace": settings.namespace, "labels": labels}


def _run_limits(spec: dict[str, Any], settings: KubernetesRunnerSettings) -> None:
    """TTL and suspension, the same fields on a Job and a JobSet."""
    if settings.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    if settings.kueue_queue:
        spec["suspend"] = True  # Kueue admits (unsuspends) it when the queue has quota


def _with_trainer(
    containers: list[dict[str, Any]],
    launch: Launch,
    settings: KubernetesRunnerSettings,
    command: list[str],
) -> list[dict[str, Any]]:
    """The containers with ours (named CONTAINER, taken from the template if it has one) first."""
    trainer: dict[str, Any] = next(
        (c for c in containers if c.get("name") == CONTAINER), {"name": CONTAINER}
    )
    others = [c for c in containers if c.get("name") != CONTAINER]
    image = settings.image or trainer.get("image")
    if not image:
        raise ValueError(
            "no image for the training pods: set kubernetes.image (LORALOOP_KUBERNETES__IMAGE) "
            f"or give the '{CONTAINER}' container an image in the pod template file"
        )
    trainer["image"] = image
    trainer["imagePullPolicy"] = settings.image_pull_policy
    trainer["command"] = command
    trainer.pop("args", None)
    trainer["env"] = _merge_named(
        trainer.get("env"),
        [{"name": "PYTHONUNBUFFERED", "value": "1"}],  # logs reach `kubectl logs` as written
    )
    # LORALOOP_* settings (database URL, registry, S3 credentials) by reference, never inline.
    env_from = list(trainer.get("envFrom") or [])
    if settings.config_map:
        env_from.append({"configMapRef": {"name": settings.config_map}})
    if settings.secret:
        env_from.append({"secretRef": {"name": settings.secret}})
    if env_from:
        trainer["envFrom"] = env_from
    resources = trainer.get("resources") or {}
    requested = settings.resources
    for key, ours in (("requests", requested.requests), ("limits", requested.limits)):
        merged = {**(resources.get(key) or {}), **ours}
        if merged:
            resources[key] = merged
    if resources:
        trainer["resources"] = resources
    if settings.shm_size:
        mount = {"name": SHM_VOLUME, "mountPath": "/dev/shm"}
        trainer["volumeMounts"] = _merge_named(trainer.get("volumeMounts"), [mount])
    return [trainer, *others]


def _merge_named(
    base: list[dict[str, Any]] | None, ours: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``base`` items by ``name``, with ``ours`` replacing those of the same name."""
    names = {item["name"] for item in ours}
    return [*(item for item in base or [] if item.get("name") not in names), *ours]
