"""A narrow gateway over the Kubernetes API: the few calls the runners make, as plain dicts.

The runners talk to ``Gateway``; ``KubernetesGateway`` implements it with the official
``kubernetes`` client (``BatchV1Api``, ``CoreV1Api``, ``CustomObjectsApi``), and the tests
with an in-memory fake. The client is imported only by ``KubernetesGateway.connect``, so
``training`` imports without it and without any cluster configuration.

Objects go in and come out as the API's JSON (camelCase dicts). A 409 on create raises
``AlreadyExists``; a 404 on read answers None and on delete is ignored; any other API
error raises ``GatewayError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from core.settings import KubernetesRunnerSettings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

Propagation = Literal["Background", "Foreground", "Orphan"]
T = TypeVar("T")

JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"


class GatewayError(RuntimeError):
    """The Kubernetes API refused or failed a call; ``status`` is its HTTP status if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AlreadyExists(GatewayError):
    """A create found an object of that name (409): the run was already submitted."""


class Gateway(Protocol):
    """The calls the runners make, in one namespace."""

    def create_job(self, body: dict[str, Any]) -> None: ...
    def read_job(self, name: str) -> dict[str, Any] | None: ...
    def delete_job(self, name: str, propagation_policy: Propagation) -> None: ...
    def create_jobset(self, body: dict[str, Any]) -> None: ...
    def read_jobset(self, name: str) -> dict[str, Any] | None: ...
    def delete_jobset(self, name: str, propagation_policy: Propagation) -> None: ...
    def list_pods(self, label_selector: str) -> list[dict[str, Any]]: ...
    def read_pod_log(self, pod: str, container: str, tail_lines: int) -> str: ...


class KubernetesGateway:
    """``Gateway`` over the official client, bound to one namespace."""

    def __init__(self, api_client: ApiClient, namespace: str):
        from kubernetes import client

        self._client = api_client
        self._namespace = namespace
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls, settings: KubernetesRunnerSettings) -> KubernetesGateway:
        """In the cluster, the pod's service account; else a kubeconfig (and context)."""
        from kubernetes import client, config

        if settings.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        else:
            config_file = str(settings.kubeconfig) if settings.kubeconfig else None
            api_client = config.new_client_from_config(config_file, context=settings.context)
        return cls(api_client, settings.namespace)

    # --- batch/v1 Jobs ---

    def create_job(self, body: dict[str, Any]) -> None:
        name, ns = body["metadata"]["name"], self._namespace
        self._call(f"create Job {name}", lambda: self._batch.create_namespaced_job(ns, body))

    def read_job(self, name: str) -> dict[str, Any] | None:
        ns = self._namespace
        # The object itself carries its status; the /status subresource would need its own RBAC.
        job = self._call(
            f"read Job {name}",
            lambda: self._batch.read_namespaced_job(name, ns),
            missing_ok=True,
        )
        return None if job is None else self._client.sanitize_for_serialization(job)

    def delete_job(self, name: str, propagation_policy: Propagation) -> None:
        ns = self._namespace
        self._call(
            f"delete Job {name}",
            lambda: self._batch.delete_namespaced_job(
                name, ns, propagation_policy=propagation_policy
            ),
            missing_ok=True,
        )

    # --- JobSets (a custom resource) ---

    def create_jobset(self, body: dict[str, Any]) -> None:
        name, where = body["metadata"]["name"], self._jobsets()
        self._call(
            f"create JobSet {name}",
            lambda: self._custom.create_namespaced_custom_object(*where, body),
        )

    def read_jobset(self, name: str) -> dict[str, Any] | None:
        where = self._jobsets()
        return self._call(
            f"read JobSet {name}",
            lambda: self._custom.get_namespaced_custom_object(*where, name),
            missing_ok=True,
        )

    def delete_jobset(self, name: str, propagation_policy: Propagation) -> None:
        where = self._jobsets()
        self._call(
            f"delete JobSet {name}",
            lambda: self._custom.delete_namespaced_custom_object(
                *where, name, propagation_policy=propagation_policy
            ),
            missing_ok=True,
        )

    def _jobsets(self) -> tuple[str, str, str, str]:
        return JOBSET_GROUP, JOBSET_VERSION, self._namespace, JOBSET_PLURAL

    # --- pods ---

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        ns = self._namespace
        pods = self._call(
            f"list pods {label_selector}",
            lambda: self._core.list_namespaced_pod(ns, label_selector=label_selector),
        )
        assert pods is not None  # not missing_ok: a failure raised
        return self._client.sanitize_for_serialization(pods.items)

    def read_pod_log(self, pod: str, container: str, tail_lines: int) -> str:
        ns = self._namespace
        # Raw bytes, decoded here: the client's own decoding returns "b'...'" (str of bytes).
        response = self._call(
            f"read the log of pod {pod}",
            lambda: self._core.read_namespaced_pod_log(
                pod, ns, container=container, tail_lines=tail_lines, _preload_content=False
            ),
        )
        assert response is not None  # not missing_ok: a failure raised
        return response.data.decode("utf-8", errors="replace")

    def _call(self, what: str, call: Callable[[], T], missing_ok: bool = False) -> T | None:
        """Run one API call, turning ApiException into our errors (404 -> None if missing_ok)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as error:
            if error.status == 404 and missing_ok:
                return None
            message = f"{what} in namespace {self._namespace}: {error.status} {error.reason}"
            if error.status == 409:
                raise AlreadyExists(message, error.status) from error
            raise GatewayError(message, error.status) from error
