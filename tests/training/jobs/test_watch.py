"""A run-job's SIGTERM handler: its exception lands wherever the main thread is; a place
that swallows it, or a library that hands it on wrapped, must not make the run train on until
SIGKILL or count as failed."""

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


def test_a_sigterm_that_a_library_hands_on_wrapped_is_still_a_stop() -> None:
    # what SQLAlchemy does when the handler's exception lands inside a statement
    class StatementError(Exception):
        pass

    def statement() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler's exception ends this sleep
        except Exception as e:
            raise StatementError(str(e)) from e

    watch = Watch(None, 60.0, StoreLogHandler())  # type: ignore[arg-type] (never started: no reports)
    assert watch.stopped_by(RuntimeError("a failure of the job's own")) is None
    previous = signal.signal(signal.SIGTERM, watch.terminate)
    try:
        with pytest.raises(StatementError) as wrapped:
            statement()
    finally:
        signal.signal(signal.SIGTERM, previous)
    stop = watch.stopped_by(wrapped.value)
    assert stop is not None and str(stop) == "terminated by signal SIGTERM"
    assert not stop.cancelled and not stop.lost
