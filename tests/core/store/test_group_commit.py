"""Group commit: items queued while a batch is written form the next batch, and each caller
gets its own item's outcome."""

from __future__ import annotations

import threading

import pytest

from core.store.group_commit import GroupCommit


class Recorder:
    """A write_batch that records its batches and holds the first one until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.writing = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.writing.set()
        assert self.release.wait(10)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def test_items_queued_while_a_batch_is_written_form_the_next_batch() -> None:
    write = Recorder()
    commits = GroupCommit(write, "test-writer")
    first = commits.submit(0)
    assert write.writing.wait(10)
    queued = [commits.submit(i) for i in (2, 4, 6)]
    write.release.set()
    assert first.result(10) == 0
    assert [f.result(10) for f in queued] == [20, 40, 60]
    assert write.batches == [[0], [2, 4, 6]]
    commits.close()


def test_an_exception_as_an_outcome_fails_that_item_alone() -> None:
    write = Recorder()
    write.release.set()
    commits = GroupCommit(write, "test-writer")
    futures = [commits.submit(i) for i in range(4)]
    with pytest.raises(ValueError, match="odd 1"):
        futures[1].result(10)
    assert futures[2].result(10) == 20
    commits.close()


def test_a_batch_that_raises_fails_every_item_of_it() -> None:
    def down(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("database down")

    commits = GroupCommit(down, "test-writer")
    futures = [commits.submit(i) for i in range(3)]
    for future in futures:
        with pytest.raises(ConnectionError):
            future.result(10)
    commits.close()


def test_close_writes_what_is_queued_and_a_later_submit_starts_again() -> None:
    write = Recorder()
    commits = GroupCommit(write, "test-writer")
    futures = [commits.submit(i) for i in (0, 2)]
    write.release.set()
    commits.close()
    assert all(f.done() for f in futures)
    assert commits.submit(4).result(10) == 40
    commits.close()


def test_an_item_cancelled_while_queued_is_not_written() -> None:
    write = Recorder()
    commits = GroupCommit(write, "test-writer")
    first = commits.submit(0)
    assert write.writing.wait(10)
    cancelled, kept = commits.submit(2), commits.submit(4)
    assert cancelled.cancel()
    write.release.set()
    assert kept.result(10) == 40 and first.result(10) == 0
    assert write.batches == [[0], [4]]
    commits.close()
