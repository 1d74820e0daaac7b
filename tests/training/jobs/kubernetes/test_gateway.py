"""The real gateway (the official kubernetes client) against a small HTTP server on loopback
that plays the API server: the paths, verbs, query parameters and bodies it sends, and how it
reads 404/409/5xx answers. No controller runs: each test says what the server answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from core.settings import KubernetesRunnerSettings
from training.jobs.kubernetes.gateway import AlreadyExists, GatewayError, KubernetesGateway
from training.jobs.kubernetes.manifests import build_job, build_jobset, run_name
from training.jobs.kubernetes.runner import KubernetesJobRunner
from training.jobs.runner import Launch, RunPhase, RunStatus

SETTINGS = KubernetesRunnerSettings(image="loraloop:1.0", namespace="training")
LAUNCH = Launch(job_id="job-" + "ab" * 16, attempt=1, kind="reward", use_case="summarize")
NAME = run_name(LAUNCH)
JOBS = "/apis/batch/v1/namespaces/training/jobs"
JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/training/jobsets"
PODS = "/api/v1/namespaces/training/pods"


class FakeApiServer:
    """Answers (method, path) from ``routes``; 404 otherwise. Records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.url = ""  # set once listening

    def answer(self, method: str, path: str, status: int, body: Any = None) -> None:
        self.routes[(method, path)] = (status, body)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        body = json.loads(raw) if raw else None
        self.requests.append(
            {"method": handler.command, "path": url.path, "query": query, "body": body}
        )
        status, body = self.routes.get((handler.command, url.path), (404, None))
        if body is None:
            body = {"kind": "Status", "apiVersion": "v1", "code": status}
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        handler.send_response(status)
        text = isinstance(body, str)  # a pod's log is text/plain
        handler.send_header("Content-Type", "text/plain" if text else "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def do_request(self) -> None:
            fake.handle(self)

        do_GET = do_POST = do_DELETE = do_request

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def gateway(api: FakeApiServer) -> KubernetesGateway:
    configuration = client.Configuration(host=api.url)
    return KubernetesGateway(client.ApiClient(configuration), namespace="training")


def test_create_posts_the_job_and_a_409_means_already_submitted(api, gateway):
    job = build_job(LAUNCH, SETTINGS)
    api.answer("POST", JOBS, 201, job)
    gateway.create_job(job)
    assert api.requests[-1]["body"] == job
    api.answer("POST", JOBS, 409)
    with pytest.raises(AlreadyExists):
        gateway.create_job(job)


def test_read_returns_the_jobs_json_and_none_once_it_is_gone(api, gateway):
    job = build_job(LAUNCH, SETTINGS)
    status = {"ready": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    api.answer("GET", f"{JOBS}/{NAME}", 200, {**job, "status": status})
    read = gateway.read_job(NAME)
    assert read["status"]["conditions"][0]["type"] == "Complete"
    assert read["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # camelCase, as sent
    api.routes.clear()
    assert gateway.read_job(NAME) is None


def test_delete_asks_for_background_propagation_and_ignores_a_404(api, gateway):
    api.answer("DELETE", f"{JOBS}/{NAME}", 200, {"kind": "Status", "status": "Success"})
    gateway.delete_job(NAME, propagation_policy="Background")
    assert api.requests[-1]["query"] == {"propagationPolicy": "Background"}
    api.routes.clear()
    gateway.delete_job(NAME, propagation_policy="Background")  # gone already: fine


def test_jobsets_use_the_custom_resource_paths(api, gateway):
    jobset = build_jobset(LAUNCH, SETTINGS)
    api.answer("POST", JOBSETS, 201, jobset)
    api.answer("GET", f"{JOBSETS}/{NAME}", 200, {**jobset, "status": {"restarts": 1}})
    api.answer("DELETE", f"{JOBSETS}/{NAME}", 200, {"kind": "Status", "status": "Success"})
    gateway.create_jobset(jobset)
    assert gateway.read_jobset(NAME)["status"] == {"restarts": 1}
    gateway.delete_jobset(NAME, propagation_policy="Background")
    create, _, delete = api.requests
    assert create["body"] == jobset
    assert delete["query"] == {"propagationPolicy": "Background"}
    api.answer("POST", JOBSETS, 409)
    with pytest.raises(AlreadyExists):
        gateway.create_jobset(jobset)


def test_pods_are_listed_by_label_and_their_logs_read_by_container(api, gateway):
    trainer = {
        "name": "trainer",
        "image": "loraloop:1.0",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }
    pod = {
        "metadata": {"name": f"{NAME}-x7k2p", "labels": {"loraloop.io/job-id": LAUNCH.job_id}},
        "spec": {"containers": [{"name": "trainer", "image": "loraloop:1.0"}]},
        "status": {"phase": "Failed", "containerStatuses": [trainer]},
    }
    api.answer("GET", PODS, 200, {"kind": "PodList", "apiVersion": "v1", "items": [pod]})
    api.answer("GET", f"{PODS}/{NAME}-x7k2p/log", 200, "step 1\nstep 2 \u2713\n")
    (listed,) = gateway.list_pods(f"loraloop.io/job-id={LAUNCH.job_id}")
    state = listed["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["reason"] == "OOMKilled"
    assert api.requests[-1]["query"] == {"labelSelector": f"loraloop.io/job-id={LAUNCH.job_id}"}
    assert gateway.read_pod_log(f"{NAME}-x7k2p", "trainer", 5) == "step 1\nstep 2 \u2713\n"
    assert api.requests[-1]["query"] == {"container": "trainer", "tailLines": "5"}


def test_other_api_errors_raise_a_gateway_error_with_the_status(api, gateway):
    api.answer("GET", f"{JOBS}/{NAME}", 403)
    with pytest.raises(GatewayError, match="403") as raised:
        gateway.read_job(NAME)
    assert raised.value.status == 403
    api.answer("POST", JOBS, 500)
    with pytest.raises(GatewayError) as raised:
        gateway.create_job(build_job(LAUNCH, SETTINGS))
    assert not isinstance(raised.value, AlreadyExists)
    api.answer("GET", f"{PODS}/{NAME}-x7k2p/log", 400)  # container still creating
    with pytest.raises(GatewayError, match="400"):
        gateway.read_pod_log(f"{NAME}-x7k2p", "trainer", 5)


def test_the_job_runner_on_the_real_client_launches_idempotently_and_cancels(api, gateway):
    runner = KubernetesJobRunner(SETTINGS, gateway)
    api.answer("POST", JOBS, 409)  # a previous worker submitted it
    runner.launch(LAUNCH)
    api.answer("DELETE", f"{JOBS}/{NAME}", 200, {"kind": "Status", "status": "Success"})
    runner.cancel(LAUNCH)
    assert api.requests[-1]["query"] == {"propagationPolicy": "Background"}
    api.routes.clear()
    assert runner.status(LAUNCH) == RunStatus(RunPhase.GONE, "NotFound")
