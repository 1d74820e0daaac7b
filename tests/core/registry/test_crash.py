"""A publisher SIGKILLed mid-upload leaves no visible version; the next publish succeeds."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from core.registry import Registry
from tests.settings_variants import settings_env

# Publishes argv[1], stalling after the first blob is stored so the test can kill it there.
PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from core.base.folders import base_model_info
    from core.registry import open_registry
    from core.settings import Settings

    settings = Settings()
    registry = open_registry(settings, base_model_info(settings))
    upload = registry.store.upload

    def stalling_upload(key, source):
        upload(key, source)
        print("uploaded", key, flush=True)
        time.sleep(600)

    registry.store.upload = stalling_upload
    registry.publish(sys.argv[1], "summarize")
    """
)


def test_killed_publisher_leaves_no_version(registry: Registry, registry_settings, adapter_dir, new_adapter):
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(adapter_dir)],
        env=settings_env(registry_settings),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("uploaded blobs/sha256/"), line
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert registry.list_versions("summarize") == []
    assert registry.publish(new_adapter(seed=5), "summarize").version == 1
    assert registry.fetch("summarize", 1).is_dir()
