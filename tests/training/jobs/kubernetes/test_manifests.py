"""The manifest builders' output is valid Kubernetes: batch/v1 objects against Kubernetes' own
JSON schemas (strict: unknown fields refused) at the oldest and newest versions
kubernetes-validate ships; JobSets through the kubeflow-trainer-api pydantic models, where a
round trip that drops or changes anything means a misspelt or mistyped field."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from kubeflow_trainer_api.models import JobsetV1alpha2JobSet
from kubernetes_validate import utils as kv_utils

from core.settings import KubernetesRunnerSettings
from training.jobs.kubernetes.manifests import build_job, build_jobset, pod_selector, run_name
from training.jobs.runner import Launch

VERSIONS = sorted(set(kv_utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
OLDEST_AND_NEWEST = [VERSIONS[0], VERSIONS[-1]]

LAUNCH = Launch(job_id="job-" + "9f" * 16, attempt=3, kind="dpo", use_case="support-bot")

A100 = {"key": "gpu", "operator": "In", "values": ["a100"]}
POD_TEMPLATE = {
    "metadata": {"annotations": {"team": "ml"}},
    "spec": {
        "priorityClassName": "training",
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [A100]}}
                ]
            }
        },
        "containers": [
            {
                "name": "trainer",
                "env": [{"name": "HF_HOME", "value": "/cache"}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            },
            {"name": "log-shipper", "image": "fluent-bit:3"},
        ],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    },
}

MINIMAL = KubernetesRunnerSettings(image="loraloop:1.0")
EVERYTHING = KubernetesRunnerSettings(
    namespace="training",
    image="registry.example/loraloop:1.0",
    image_pull_policy="Always",
    service_account="loraloop-trainer",
    nproc_per_node=8,
    nodes=4,
    resources={
        "requests": {"cpu": "32", "memory": "200Gi"},
        "limits": {"nvidia.com/gpu": 8, "memory": "240Gi"},
    },
    node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    shm_size="64Gi",
    ttl_seconds_after_finished=3600,
    active_deadline_seconds=86_400,
    backoff_limit=2,
    max_restarts=3,
    kueue_queue="team-a",
    config_map="loraloop-config",
    secret="loraloop-secrets",
)
CASES = {
    "minimal": (MINIMAL, None),
    "everything": (EVERYTHING, None),
    "with-template": (EVERYTHING, POD_TEMPLATE),
    "no-shm-no-ttl": (
        KubernetesRunnerSettings(
            image="loraloop:1.0", shm_size=None, ttl_seconds_after_finished=None
        ),
        None,
    ),
}


@pytest.mark.parametrize("version", OLDEST_AND_NEWEST)
@pytest.mark.parametrize("case", CASES)
def test_the_job_is_valid_for_the_oldest_and_newest_kubernetes(case, version):
    settings, template = CASES[case]
    kubernetes_validate.validate(build_job(LAUNCH, settings, template), version, strict=True)


@pytest.mark.parametrize("version", OLDEST_AND_NEWEST)
@pytest.mark.parametrize("case", CASES)
def test_the_jobsets_child_job_is_valid_for_the_oldest_and_newest_kubernetes(case, version):
    settings, template = CASES[case]
    replicated = build_jobset(LAUNCH, settings, template)["spec"]["replicatedJobs"][0]
    job = {"apiVersion": "batch/v1", "kind": "Job", **replicated["template"]}
    job["metadata"] = {**job["metadata"], "name": "child"}
    kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_the_jobset_round_trips_through_the_jobset_model_unchanged(case):
    settings, template = CASES[case]
    jobset = build_jobset(LAUNCH, settings, template)
    assert JobsetV1alpha2JobSet.from_dict(jobset).to_dict() == jobset


def test_the_checks_catch_a_misspelt_field():
    job = build_job(LAUNCH, MINIMAL)
    job["spec"]["backofLimit"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="backofLimit"):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)
    jobset = build_jobset(LAUNCH, MINIMAL)
    jobset["spec"]["failurePolicy"]["maxRestart"] = 1
    assert JobsetV1alpha2JobSet.from_dict(jobset).to_dict() != jobset


def test_a_job_runs_torchrun_standalone_with_one_process_per_gpu():
    job = build_job(LAUNCH, EVERYTHING)
    (trainer, *_) = job["spec"]["template"]["spec"]["containers"]
    assert trainer["command"] == (
        ["torchrun", "--standalone", "--nproc-per-node", "8"]
        + ["-m", "training", "run-job", LAUNCH.job_id]
    )
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["spec"]["activeDeadlineSeconds"] == 86_400


def test_a_jobset_rendezvouses_at_node_zeros_hostname_and_restarts_as_a_gang():
    jobset = build_jobset(LAUNCH, EVERYTHING)
    name = run_name(LAUNCH)
    assert jobset["spec"]["network"]["subdomain"] == name
    assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 3}
    (replicated,) = jobset["spec"]["replicatedJobs"]
    child = replicated["template"]["spec"]
    assert (child["parallelism"], child["completions"]) == (4, 4)
    assert child["completionMode"] == "Indexed"
    assert child["backoffLimit"] == 0  # a pod never restarts alone: its peers would hang
    command = child["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--nnodes") + 1] == "4"
    assert command[command.index("--node-rank") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert command[command.index("--rdzv-endpoint") + 1] == f"{name}-node-0-0.{name}:29400"
    assert command[-3:] == ["training", "run-job", LAUNCH.job_id]


def test_the_pod_carries_the_required_fields():
    pod = build_job(LAUNCH, EVERYTHING, POD_TEMPLATE)["spec"]["template"]
    spec = pod["spec"]
    assert pod["metadata"]["labels"]["loraloop.io/kind"] == "dpo"
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "loraloop-trainer"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert "cache" in volumes  # the template's own volume stays
    trainer = spec["containers"][0]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in trainer["volumeMounts"]
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in trainer["env"]
    assert trainer["envFrom"] == [
        {"configMapRef": {"name": "loraloop-config"}},
        {"secretRef": {"name": "loraloop-secrets"}},
    ]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_the_builders_do_not_change_the_template_they_are_given():
    template = copy.deepcopy(POD_TEMPLATE)
    build_job(LAUNCH, EVERYTHING, template)
    build_jobset(LAUNCH, EVERYTHING, template)
    assert template == POD_TEMPLATE


def test_names_and_selectors_derive_from_the_job_id_and_attempt():
    assert run_name(LAUNCH) == f"{LAUNCH.job_id}-3"
    assert pod_selector(LAUNCH) == f"loraloop.io/job-id={LAUNCH.job_id},loraloop.io/attempt=3"
    with pytest.raises(ValueError, match="job id"):
        run_name(Launch("Job_1", 1, "ppo", "x"))
    with pytest.raises(ValueError, match="attempt"):
        run_name(Launch("job-ab", 0, "ppo", "x"))
