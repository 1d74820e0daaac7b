"""A run-job's SIGTERM handler: its exception lands wherever the main thread is, and a place
that swallows it must not let the run train on until SIGKILL."""

from __future__ import annotations

import os
import signal
import time

import pytest

from training.jobs.watch import JobStopped, StoreLogHandler, Watch


def test_a_sigterm_whose_exception_was_swallowed_still_stops_the_run_at_its_next_step() -> None:
    watch = Watch(None, 60.0, StoreLogHandler())  # type: ignore[arg-type] (never started: no reports)
    watch.check()  # nothing asked it to stop yet
    previous = signal.signal(signal.SIGTERM, watch.terminate)
    try:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler's exception ends this sleep
            pytest.fail("the SIGTERM handler did not raise")
        except Exception:  # noqa: BLE001 (what a __del__ or a broad except in training code does)
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    with pytest.raises(JobStopped, match="terminated by signal SIGTERM") as stopped:
        watch.check()
    assert not stopped.value.cancelled and not stopped.value.lost
