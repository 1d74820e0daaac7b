"""Settings derived from a test's settings: a validated copy with changes, the same on an S3
registry on a test server, and the LORALOOP_* environment that hands them to a subprocess."""

from __future__ import annotations

import os

from core.settings import Settings


def updated(settings: Settings, **update) -> Settings:
    """A validated copy (model_copy alone would skip validation, e.g. of SecretStr)."""
    return Settings(**{**settings.model_dump(), **update})


def s3_settings(settings: Settings, server, bucket: str, **update) -> Settings:
    """``settings`` with the registry in ``bucket`` on ``server`` (tests/s3_servers.py)."""
    return updated(
        settings,
        **{
            "registry_url": f"s3://{bucket}/registry",
            "s3_endpoint_url": server.endpoint_url,
            "s3_region": server.region,
            "s3_access_key_id": server.access_key,
            "s3_secret_access_key": server.secret_key,
            **update,
        },
    )


def settings_env(settings) -> dict[str, str]:
    """This process's environment plus the registry's settings as LORALOOP_* variables, with
    the repository on PYTHONPATH: for a subprocess that opens the same registry."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for field in ("data_dir", "base_model", "base_model_id", "registry_url", "cache_dir",
                  "s3_endpoint_url", "s3_region", "s3_access_key_id"):
        value = getattr(settings, field)
        if value is not None:
            env[f"LORALOOP_{field.upper()}"] = str(value)
    if settings.s3_secret_access_key is not None:
        env["LORALOOP_S3_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    return env
