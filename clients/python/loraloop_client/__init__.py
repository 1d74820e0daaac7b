"""loraloop's Python SDK: ``Client`` / ``AsyncClient`` for adapters, feedback, rewards and
training jobs of a loraloop server, and ``client.openai()`` for completions and chat.

    from loraloop_client import Client

    with Client() as client:  # LORALOOP_BASE_URL, LORALOOP_API_KEY
        print([a.name for a in client.adapters.list()])
"""

from loraloop_client._client import AsyncClient, Client
from loraloop_client._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    LoraloopError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from loraloop_client._version import __version__
from loraloop_client.resources.adapters import Adapter, Alias, Residency, Version
from loraloop_client.resources.feedback import Feedback, FeedbackStats, ImportReport, Snapshot
from loraloop_client.resources.jobs import Job, JobList, JobLogs, LogLine, MetricPoint

__all__ = [
    "APIConnectionError", "APIError", "APIStatusError", "APITimeoutError", "Adapter", "Alias",
    "AsyncClient", "AuthenticationError", "BadRequestError", "Client", "ConflictError",
    "Feedback", "FeedbackStats", "ImportReport", "InternalServerError", "Job", "JobList",
    "JobLogs", "LogLine", "LoraloopError", "MetricPoint", "NotFoundError",
    "PermissionDeniedError", "RateLimitError", "RequestTooLargeError", "Residency",
    "ServiceUnavailableError", "Snapshot", "UnprocessableEntityError", "Version", "__version__",
]
