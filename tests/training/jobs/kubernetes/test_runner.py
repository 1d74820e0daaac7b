"""The Kubernetes runners' state machine, against an in-memory fake of the API (no cluster)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.settings import KubernetesRunnerSettings
from tests.training.jobs.kubernetes.fake_gateway import FakeGateway
from training.jobs.kubernetes.runner import JobSetRunner, KubernetesJobRunner
from training.jobs.runner import Launch, RunPhase, RunStatus

LAUNCH = Launch(job_id="job-" + "0123456789abcdef" * 2, attempt=1, kind="ppo", use_case="summarize")
NAME = f"{LAUNCH.job_id}-1"


def condition(kind: str, reason: str | None = None) -> dict:
    found = {"type": kind, "status": "True"}
    return found if reason is None else {**found, "reason": reason}


def changed(settings: KubernetesRunnerSettings, update: dict) -> KubernetesRunnerSettings:
    return KubernetesRunnerSettings.model_validate(settings.model_dump() | update)


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def settings() -> KubernetesRunnerSettings:
    return KubernetesRunnerSettings(image="registry.example/loraloop:1.0", namespace="training")


@pytest.fixture
def job_runner(settings, gateway) -> KubernetesJobRunner:
    return KubernetesJobRunner(settings, gateway)


@pytest.fixture
def jobset_runner(settings, gateway) -> JobSetRunner:
    return JobSetRunner(settings, gateway)


# --- batch/v1 Job runner ---


def test_launch_creates_one_job_named_after_the_job_and_its_attempt(job_runner, gateway):
    job_runner.launch(LAUNCH)
    job_runner.launch(Launch(LAUNCH.job_id, 2, LAUNCH.kind, LAUNCH.use_case))
    assert sorted(gateway.jobs) == [NAME, f"{LAUNCH.job_id}-2"]
    labels = gateway.jobs[NAME]["metadata"]["labels"]
    assert labels["loraloop.io/job-id"] == LAUNCH.job_id
    assert labels["loraloop.io/use-case"] == "summarize"
    assert "ownerReferences" not in gateway.jobs[NAME]["metadata"]


def test_launching_the_same_attempt_twice_starts_one_run(job_runner, gateway):
    job_runner.launch(LAUNCH)
    gateway.set_status(NAME, {"active": 1, "ready": 1})
    job_runner.launch(LAUNCH)  # a 409: already submitted, not an error
    assert gateway.creates == [NAME, NAME]
    assert list(gateway.jobs) == [NAME]
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.RUNNING)  # the first one, untouched


def test_a_job_is_pending_until_its_pod_runs_then_succeeds_on_complete(job_runner, gateway):
    job_runner.launch(LAUNCH)
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.PENDING)
    gateway.set_status(NAME, {"active": 1, "ready": 0})  # scheduling, pulling the image
    assert job_runner.status(LAUNCH).phase is RunPhase.PENDING
    gateway.set_status(NAME, {"active": 1, "ready": 1})
    assert job_runner.status(LAUNCH).phase is RunPhase.RUNNING
    gateway.set_status(NAME, {"succeeded": 1, "conditions": [condition("Complete")]})
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.SUCCEEDED)


def test_a_failed_job_reports_its_pods_reason_such_as_oomkilled(job_runner, gateway):
    job_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "x7k2p", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    gateway.set_status(NAME, {"conditions": [condition("Failed", "BackoffLimitExceeded")]})
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "OOMKilled")


def test_a_failed_job_whose_process_exited_non_zero_reports_the_exit_code(job_runner, gateway):
    job_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "x7k2p", "Failed", terminated={"exitCode": 2, "reason": "Error"})
    gateway.set_status(NAME, {"conditions": [condition("Failed", "BackoffLimitExceeded")]})
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "exit code 2")


def test_a_failed_job_without_pods_keeps_the_jobs_reason(job_runner, gateway):
    job_runner.launch(LAUNCH)  # the pod is already TTL-collected, say
    gateway.set_status(NAME, {"conditions": [condition("Failed", "BackoffLimitExceeded")]})
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "BackoffLimitExceeded")


def test_a_job_past_its_deadline_failed_with_deadline_exceeded(settings, gateway):
    runner = KubernetesJobRunner(changed(settings, {"active_deadline_seconds": 60}), gateway)
    runner.launch(LAUNCH)
    assert gateway.jobs[NAME]["spec"]["activeDeadlineSeconds"] == 60
    gateway.add_pod(NAME, "x7k2p", "Failed", terminated={"exitCode": 143, "reason": "Error"})
    gateway.set_status(NAME, {"conditions": [condition("Failed", "DeadlineExceeded")]})
    assert runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "DeadlineExceeded")


def test_failure_target_counts_as_failed_while_the_last_pods_terminate(job_runner, gateway):
    job_runner.launch(LAUNCH)
    failing = condition("FailureTarget", "DeadlineExceeded")
    gateway.set_status(NAME, {"active": 1, "conditions": [failing]})
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "DeadlineExceeded")


def test_cancel_deletes_the_job_in_the_background_and_the_run_is_gone(job_runner, gateway):
    job_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "x7k2p", "Running")
    job_runner.cancel(LAUNCH)
    assert gateway.deletes == [("Job", NAME, "Background")]
    assert gateway.pods == []  # not orphaned
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.GONE, "NotFound")
    job_runner.cancel(LAUNCH)  # again: already gone is fine


def test_a_job_that_vanished_is_gone(job_runner, gateway):
    job_runner.launch(LAUNCH)
    gateway.jobs.clear()  # deleted by someone, or collected after ttlSecondsAfterFinished
    assert job_runner.status(LAUNCH) == RunStatus(RunPhase.GONE, "NotFound")
    never = Launch("job-ffff", 1, "dpo", "summarize")
    assert job_runner.status(never).phase is RunPhase.GONE


def test_with_a_kueue_queue_the_job_is_labelled_and_created_suspended(settings, gateway):
    runner = KubernetesJobRunner(changed(settings, {"kueue_queue": "team-a"}), gateway)
    runner.launch(LAUNCH)
    job = gateway.jobs[NAME]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    gateway.set_status(NAME, {"conditions": [condition("Suspended", "JobSuspended")]})
    assert runner.status(LAUNCH).phase is RunPhase.PENDING
    job["spec"]["suspend"] = False  # Kueue admits it
    gateway.set_status(NAME, {"active": 1, "ready": 1})
    assert runner.status(LAUNCH).phase is RunPhase.RUNNING


def test_without_a_kueue_queue_nothing_is_suspended(job_runner, gateway):
    job_runner.launch(LAUNCH)
    assert "suspend" not in gateway.jobs[NAME]["spec"]
    assert "kueue.x-k8s.io/queue-name" not in gateway.jobs[NAME]["metadata"]["labels"]


def test_logs_are_the_tail_of_the_failed_pod(job_runner, gateway):
    job_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "aaaaa", "Succeeded", log="fine\n")
    gateway.add_pod(NAME, "zzzzz", "Failed", log="step 1\nstep 2\nCUDA out of memory\n")
    assert job_runner.logs(LAUNCH, tail=2) == ["step 2", "CUDA out of memory"]


def test_logs_of_a_run_without_pods_or_readable_logs_are_empty(job_runner, gateway):
    assert job_runner.logs(LAUNCH) == []
    job_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "x7k2p", "Pending")  # ContainerCreating: the API answers 400
    assert job_runner.logs(LAUNCH) == []


def test_a_runner_without_an_image_refuses_to_start(gateway):
    with pytest.raises(ValueError, match="LORALOOP_KUBERNETES__IMAGE"):
        KubernetesJobRunner(KubernetesRunnerSettings(), gateway)


def test_the_pod_template_file_is_merged_under_the_runners_fields(settings, gateway, tmp_path):
    template = tmp_path / "pod.yaml"
    template.write_text(
        """
metadata:
  annotations: {team: ml}
spec:
  priorityClassName: training
  containers:
    - name: trainer
      env: [{name: HF_HOME, value: /cache}, {name: PYTHONUNBUFFERED, value: "0"}]
      resources: {requests: {cpu: "4"}}
    - name: log-shipper
      image: fluent-bit:3
"""
    )
    update = {"pod_template_file": template, "resources": {"limits": {"nvidia.com/gpu": 1}}}
    KubernetesJobRunner(changed(settings, update), gateway).launch(LAUNCH)
    pod = gateway.jobs[NAME]["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"team": "ml"}
    assert pod["metadata"]["labels"]["loraloop.io/job-id"] == LAUNCH.job_id
    assert pod["spec"]["priorityClassName"] == "training"
    trainer, shipper = pod["spec"]["containers"]
    assert shipper["name"] == "log-shipper"
    assert trainer["image"] == settings.image
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env == {"HF_HOME": "/cache", "PYTHONUNBUFFERED": "1"}
    assert trainer["resources"] == {"requests": {"cpu": "4"}, "limits": {"nvidia.com/gpu": 1}}


def test_a_pod_template_file_that_is_not_a_pod_template_is_refused(settings, gateway, tmp_path):
    template = tmp_path / "job.yaml"
    template.write_text("apiVersion: batch/v1\nkind: Job\nspec: {}\n")
    with pytest.raises(ValueError, match="PodTemplateSpec"):
        KubernetesJobRunner(changed(settings, {"pod_template_file": template}), gateway)


# --- JobSet runner ---


def test_a_jobset_launch_is_idempotent_and_runs_once_every_node_is_ready(jobset_runner, gateway):
    jobset_runner.launch(LAUNCH)
    jobset_runner.launch(LAUNCH)
    assert gateway.creates == [NAME, NAME] and list(gateway.jobsets) == [NAME]
    assert jobset_runner.status(LAUNCH) == RunStatus(RunPhase.PENDING)
    gateway.set_status(NAME, {"replicatedJobsStatus": [{"name": "node", "ready": 0, "active": 1}]})
    assert jobset_runner.status(LAUNCH).phase is RunPhase.PENDING
    gateway.set_status(NAME, {"replicatedJobsStatus": [{"name": "node", "ready": 1, "active": 1}]})
    assert jobset_runner.status(LAUNCH).phase is RunPhase.RUNNING
    gateway.set_status(NAME, {"terminalState": "Completed", "conditions": [condition("Completed")]})
    assert jobset_runner.status(LAUNCH) == RunStatus(RunPhase.SUCCEEDED)


def test_a_jobset_that_ran_out_of_restarts_reports_the_failed_pods_reason(jobset_runner, gateway):
    jobset_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "node-0-0-abcde", "Failed", terminated={"exitCode": 1, "reason": "Error"})
    gateway.add_pod(NAME, "node-0-1-fghij", "Failed", reason="Evicted")
    out_of_restarts = condition("Failed", "ReachedMaxRestarts")
    gateway.set_status(NAME, {"restarts": 2, "conditions": [out_of_restarts]})
    assert jobset_runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "exit code 1")


def test_a_jobset_failed_for_a_specific_reason_keeps_it(jobset_runner, gateway):
    jobset_runner.launch(LAUNCH)
    gateway.set_status(NAME, {"conditions": [condition("Failed", "FailJobSetAction")]})
    assert jobset_runner.status(LAUNCH) == RunStatus(RunPhase.FAILED, "FailJobSetAction")


def test_cancelling_a_jobset_deletes_it_in_the_background(jobset_runner, gateway):
    jobset_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "node-0-0-abcde", "Running")
    jobset_runner.cancel(LAUNCH)
    assert gateway.deletes == [("JobSet", NAME, "Background")]
    assert gateway.pods == []
    assert jobset_runner.status(LAUNCH) == RunStatus(RunPhase.GONE, "NotFound")


def test_a_jobset_with_a_kueue_queue_is_labelled_and_created_suspended(settings, gateway):
    runner = JobSetRunner(changed(settings, {"kueue_queue": "team-a"}), gateway)
    runner.launch(LAUNCH)
    jobset = gateway.jobsets[NAME]
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert jobset["spec"]["suspend"] is True
    assert runner.status(LAUNCH).phase is RunPhase.PENDING


def test_jobset_logs_come_from_node_zero_when_no_pod_failed(jobset_runner, gateway):
    jobset_runner.launch(LAUNCH)
    gateway.add_pod(NAME, "node-0-1-fghij", "Running", log="rank 1\n")
    gateway.add_pod(NAME, "node-0-0-abcde", "Running", log="rank 0\n")
    assert jobset_runner.logs(LAUNCH) == ["rank 0"]


def test_the_runners_import_the_kubernetes_client_only_when_connecting():
    code = (
        "import sys, training.cli_registry, training.jobs.kubernetes.runner; "
        "print('kubernetes' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
