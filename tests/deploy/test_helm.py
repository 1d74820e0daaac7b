"""The Helm chart: `helm lint --strict`, `helm template` checked against the Kubernetes schemas
(oldest and newest that kubernetes-validate ships), and the rendered manifests against the code:
settings names, probe routes, non-root pods, secrets only by reference. No cluster runs here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from pydantic import BaseModel

from core.settings import KubernetesRunnerSettings, Settings
from service.app import create_app
from service.server import EXIT_MARGIN_SECONDS
from training.jobs.kubernetes.manifests import build_job
from training.jobs.runner import Launch

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "loraloop"
VALUES = {"default": None, "gpu-s3-postgres": CHART / "ci" / "gpu-s3-postgres-values.yaml"}
KUBERNETES_VERSIONS = [all_versions()[0], all_versions()[-1]]
# Kinds from CRDs, which kubernetes-validate has no schema for.
CRD_KINDS = {"ServiceMonitor"}
SECRET_SETTINGS = {"api_keys", "database_url", "s3_access_key_id", "s3_secret_access_key"}
DUMMY_SECRETS = {
    "LORALOOP_API_KEYS": '[{"name": "ci", "key": "0123456789abcdef", "scopes": ["admin"]}]',
    "LORALOOP_DATABASE_URL": "postgresql+psycopg://loraloop@db:5432/loraloop",
    "LORALOOP_S3_ACCESS_KEY_ID": "id",
    "LORALOOP_S3_SECRET_ACCESS_KEY": "secret",
}

_rendered: dict[str, str] = {}


def _helm_template(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm, "template", "rel", str(CHART), "--namespace", "ml", *args],
        capture_output=True, text=True, timeout=120,
    )


def _values_args(name: str) -> list[str]:
    return ["-f", str(VALUES[name])] if VALUES[name] else []


def render(helm: str, name: str) -> str:
    if name not in _rendered:
        result = _helm_template(helm, *_values_args(name))
        assert result.returncode == 0, result.stderr
        _rendered[name] = result.stdout
    return _rendered[name]


def manifests(helm: str, name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render(helm, name)) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def _worker_kubernetes_settings(docs: list[dict]) -> KubernetesRunnerSettings:
    """The worker's ``kubernetes`` settings, read from its rendered LORALOOP_KUBERNETES__* env."""
    prefix = "LORALOOP_KUBERNETES__"
    fields: dict[str, Any] = {}
    for config_map in of_kind(docs, "ConfigMap"):
        for key, value in (config_map.get("data") or {}).items():
            if key.startswith(prefix):
                try:
                    fields[key.removeprefix(prefix).lower()] = json.loads(value)
                except json.JSONDecodeError:
                    fields[key.removeprefix(prefix).lower()] = value
    return KubernetesRunnerSettings.model_validate(fields)


def training_jobs(docs: list[dict]) -> list[dict]:
    """The Job the Kubernetes runner builds for a run from the chart's pod template and the
    worker's settings: what the cluster would receive."""
    templates = [
        yaml.safe_load(text)
        for config_map in of_kind(docs, "ConfigMap")
        for key, text in (config_map.get("data") or {}).items() if key.endswith(".yaml")
    ]
    if not templates:
        return []
    launch = Launch(job_id="job-0123456789abcdef", attempt=1, kind="ppo", use_case="summarize")
    settings = _worker_kubernetes_settings(docs)
    return [build_job(launch, settings, base=template) for template in templates]


def pod_specs(docs: list[dict]) -> list[dict]:
    workloads = of_kind(docs, "Deployment") + training_jobs(docs)
    return [workload["spec"]["template"]["spec"] for workload in workloads]


def server_container(docs: list[dict]) -> dict:
    (server,) = [
        d for d in of_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    (container,) = server["spec"]["template"]["spec"]["containers"]
    return container


def settings_names(docs: list[dict]) -> set[str]:
    """Every LORALOOP_* variable a pod can see: ConfigMap keys and container env names."""
    names = {
        key for config_map in of_kind(docs, "ConfigMap")
        for key in (config_map.get("data") or {}) if key.startswith("LORALOOP_")
    }
    for spec in pod_specs(docs):
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", []) if e["name"].startswith("LORALOOP_")}
    return names


def container_env(docs: list[dict]) -> dict[str, str]:
    """The server container's environment as the process sees it, secrets replaced by dummies."""
    container = server_container(docs)
    config_maps = {c["metadata"]["name"]: c.get("data") or {} for c in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container["env"]:
        env[entry["name"]] = entry["value"] if "value" in entry else DUMMY_SECRETS[entry["name"]]
    return env


@pytest.fixture(params=list(VALUES))
def values_name(request) -> str:
    return request.param


def test_helm_lint_strict_passes(helm, values_name):
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *_values_args(values_name)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_rendered_chart_validates_strictly_against_kubernetes(helm, values_name, kubernetes_version):
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
         "-k", kubernetes_version, "-"],
        input=render(helm, values_name), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert all(any(kind in line for kind in CRD_KINDS) for line in warnings), warnings
    for job in training_jobs(manifests(helm, values_name)):
        kubernetes_validate.validate(job, kubernetes_version, strict=True)


def test_both_values_files_render_every_template(helm):
    kinds = {doc["kind"] for doc in manifests(helm, "gpu-s3-postgres")}
    assert kinds == {
        "ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
        "Role", "RoleBinding", "HorizontalPodAutoscaler", "ServiceMonitor",
    }
    rendered = {Path(line.split(": ", 1)[1]).name for line in
                render(helm, "gpu-s3-postgres").splitlines() if line.startswith("# Source: ")}
    templates = {p.name for p in (CHART / "templates").glob("*.yaml")}
    assert rendered == templates


def _is_setting(name: str) -> bool:
    """LORALOOP_FIELD or LORALOOP_FIELD__SUBFIELD names a field of Settings."""
    field, *nested = name.removeprefix("LORALOOP_").lower().split("__")
    info = Settings.model_fields.get(field)
    if info is None:
        return False
    if not nested:
        return True
    model = info.annotation
    return isinstance(model, type) and issubclass(model, BaseModel) and nested[0] in model.model_fields


def test_every_rendered_loraloop_variable_is_a_settings_field(helm, values_name):
    names = settings_names(manifests(helm, values_name))
    assert {"LORALOOP_BASE_MODEL", "LORALOOP_DATA_DIR", "LORALOOP_CACHE_DIR"} <= names
    assert [name for name in sorted(names) if not _is_setting(name)] == []


def test_is_setting_refuses_a_name_that_is_no_field():
    assert _is_setting("LORALOOP_MAX_BATCH_SIZE")
    assert not _is_setting("LORALOOP_MAX_BATCHSIZE")
    assert not _is_setting("LORALOOP_DTYPE__X")


def _values_config(name: str) -> dict[str, Any]:
    config = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    if VALUES[name]:
        config.update(yaml.safe_load(VALUES[name].read_text()).get("config", {}))
    return config


def test_every_setting_in_values_reaches_the_server_with_its_value(helm, values_name, monkeypatch):
    for name in list(Settings.model_fields) + ["config"]:
        monkeypatch.delenv(f"LORALOOP_{name.upper()}", raising=False)
    env = container_env(manifests(helm, values_name))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for field, expected in _values_config(values_name).items():
        actual = getattr(settings, field)
        assert (str(actual) if isinstance(actual, Path) else actual) == expected, field
    assert (settings.data_dir, settings.cache_dir) == (Path("/data"), Path("/cache"))


def test_values_still_naming_max_cpu_adapters_set_max_host_adapters(helm, monkeypatch):
    # The setting's first name: a values file written before the rename keeps working.
    result = _helm_template(helm, "--set", "config.max_cpu_adapters=12")
    assert result.returncode == 0, result.stderr
    env = container_env([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    assert env["LORALOOP_MAX_CPU_ADAPTERS"] == "12"
    for name in list(Settings.model_fields) + ["config", "max_cpu_adapters"]:
        monkeypatch.delenv(f"LORALOOP_{name.upper()}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().max_host_adapters == 12


def test_probes_point_at_real_routes(helm, values_name):
    # The app's GET routes, as its OpenAPI schema lists them (probes are GET requests).
    paths = create_app(Settings()).openapi()["paths"]
    routes = {path for path, methods in paths.items() if "get" in methods}
    container = server_container(manifests(helm, values_name))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] in ports
    startup = container["startupProbe"]
    # Loading a 7B base from a volume takes minutes: the startup probe must wait for it.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert "--port" in container["args"] and str(ports["http"]) in container["args"]


def test_nothing_runs_as_root(helm, values_name):
    for spec in pod_specs(manifests(helm, values_name)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
        mounts_of = {}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context.get("runAsUser", 10001) != 0
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts_of = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert {"/tmp", "/data", "/cache", "/dev/shm", "/home/loraloop"} <= set(mounts_of)
        volumes = {v["name"]: v for v in spec["volumes"]}
        shm = volumes[mounts_of["/dev/shm"]]  # the chart's, or the Kubernetes runner's
        assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"]
        # A Service named like the release must not inject LORALOOP_PORT=tcp://... into pods.
        assert spec["enableServiceLinks"] is False


SECRET_LOOKING = re.compile(
    r"://[^/@\s]+:[^/@\s]+@"  # credentials in a URL
    r"|AKIA[0-9A-Z]{16}"  # an AWS access key id
    r"|-----BEGIN"  # a private key
    r'|"key"\s*:'  # an API key list
    , re.I,
)


def test_secrets_never_appear_as_plain_values(helm, values_name):
    docs = manifests(helm, values_name)
    assert of_kind(docs, "Secret") == []
    secret_variables = {f"LORALOOP_{name.upper()}" for name in SECRET_SETTINGS}
    for config_map in of_kind(docs, "ConfigMap"):
        for key, value in (config_map.get("data") or {}).items():
            assert key not in secret_variables
            assert not SECRET_LOOKING.search(value), (key, value)
    for spec in pod_specs(docs):
        for container in spec["containers"]:
            for entry in container.get("env", []):
                if entry["name"] in secret_variables:
                    assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["key"]
                assert not SECRET_LOOKING.search(str(entry.get("value", ""))), entry


@pytest.mark.parametrize("setting", sorted(SECRET_SETTINGS))
def test_the_schema_refuses_a_secret_written_into_config(helm, setting):
    result = _helm_template(helm, "--set", f"config.{setting}=postgresql://u:p@db/x")
    assert result.returncode != 0
    assert f"config.{setting} is a secret" in result.stderr and ".existingSecret" in result.stderr
    worker = _helm_template(helm, "--set", f"worker.config.{setting}=x")
    assert worker.returncode != 0 and "is a secret" in worker.stderr


def test_the_schema_refuses_a_latest_image(helm):
    result = _helm_template(helm, "--set", "image.tag=latest")
    assert result.returncode != 0 and "tag" in result.stderr


def test_images_are_pinned_and_pulled_if_not_present(helm, values_name):
    for spec in pod_specs(manifests(helm, values_name)):
        for container in spec["containers"]:
            assert re.fullmatch(r"[^:]+:\d[\w.-]*", container["image"]), container["image"]
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_gpus_base_weights_and_adapter_cache_per_replica(helm):
    docs = manifests(helm, "gpu-s3-postgres")
    container = server_container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    (server,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-loraloop"]
    volumes = {v["name"]: v for v in server["spec"]["template"]["spec"]["volumes"]}
    assert volumes["base-model"]["persistentVolumeClaim"] == {"claimName": "llama-2-weights", "readOnly": True}
    assert "ephemeral" in volumes["adapter-cache"]  # never a claim shared by replicas
    assert server["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"

    default = manifests(helm, "default")
    assert "nvidia.com/gpu" not in str(server_container(default)["resources"])
    (default_server,) = of_kind(default, "Deployment")
    assert "runtimeClassName" not in default_server["spec"]["template"]["spec"]
    default_volumes = {v["name"]: v for v in default_server["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in default_volumes["adapter-cache"]


def test_graceful_rollout_comes_from_values(helm):
    docs = manifests(helm, "gpu-s3-postgres")
    (server,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-loraloop"]
    spec = server["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 150
    assert spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    assert container_env(docs)["LORALOOP_SHUTDOWN_TIMEOUT_SECONDS"] == "120"
    # No spare GPU for a surge pod: replace one replica at a time.
    assert server["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == server["spec"]["selector"]["matchLabels"]


def test_the_grace_period_covers_the_prestop_sleep_and_the_server_shutdown(helm, values_name, monkeypatch):
    """Kubernetes counts the grace period from the preStop hook; the server then drains for
    shutdown_timeout_seconds (as the pod's settings say) and needs its exit margin after."""
    docs = manifests(helm, values_name)
    for name in Settings.model_fields:
        monkeypatch.delenv(f"LORALOOP_{name.upper()}", raising=False)
    for name, value in container_env(docs).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    (server,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"]
    spec = server["spec"]["template"]["spec"]
    sleep, seconds = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    needed = int(seconds) + settings.shutdown_timeout_seconds + EXIT_MARGIN_SECONDS
    assert spec["terminationGracePeriodSeconds"] >= needed
    assert settings.shutdown_timeout_seconds > 0  # in-flight requests do get time to finish


def test_the_worker_may_manage_jobs_in_its_namespace_only(helm):
    docs = manifests(helm, "gpu-s3-postgres")
    (role,) = of_kind(docs, "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"] for group in rule["apiGroups"]
        for resource in rule["resources"] for verb in rule["verbs"]
    }
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("batch", "jobs", verb) in granted
        assert ("jobset.x-k8s.io", "jobsets", verb) in granted
    for resource in ("pods", "pods/log"):
        assert {("", resource, verb) for verb in ("get", "list", "watch")} <= granted
    (binding,) = of_kind(docs, "RoleBinding")
    (worker,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-loraloop-worker"]
    worker_spec = worker["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == worker_spec["serviceAccountName"]
    assert binding["subjects"][0]["namespace"] == "ml"
    # The server and Job pods have no API access.
    (job,) = training_jobs(docs)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] != worker_spec["serviceAccountName"]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

    plain_jobs = _helm_template(helm, *_values_args("gpu-s3-postgres"), "--set", "worker.runner=kubernetes")
    assert plain_jobs.returncode == 0 and "jobset" not in plain_jobs.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--set", "secrets.apiKeys.existingSecret="], "allow_open_access"),
        (["--set", "replicaCount=2"], "registry_url"),
        (["--set", "replicaCount=2", "--set", "config.registry_url=s3://b/p"], "secrets.database"),
        (["--set", "config.port=9000"], "config.port is set by the chart"),
        (["--set", "config.shutdown_timeout_seconds=5"], "use the value shutdownTimeoutSeconds"),
        (["--set", "terminationGracePeriodSeconds=40"],
         "terminationGracePeriodSeconds (40) must be at least preStopSleepSeconds (10) + "
         "shutdownTimeoutSeconds (30) + 15 s"),
        (["--set", "shutdownTimeoutSeconds=600"], "set it to 625 or more"),
    ],
)
def test_the_chart_refuses_values_that_cannot_work_and_says_what_to_set(helm, overrides, message):
    result = _helm_template(helm, *overrides)
    assert result.returncode != 0 and message in result.stderr


def test_an_open_api_renders_when_asked_for(helm):
    result = _helm_template(
        helm, "--set", "secrets.apiKeys.existingSecret=", "--set", "config.allow_open_access=true"
    )
    assert result.returncode == 0 and "LORALOOP_API_KEYS" not in result.stdout
