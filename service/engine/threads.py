"""Which threads of the serving process run PyTorch's CPU kernels, and why it matters.

PyTorch runs its CPU kernels on OpenMP (libgomp on Linux). A thread that runs an op large
enough to split gets an OpenMP team of its own, worker threads that live as long as that
thread. libgomp lets a team's workers spin-wait between two parallel regions only while the
process's OpenMP threads are no more than its cores; past that, each worker sleeps as soon
as a region ends and must be woken (a futex, an interrupt to a halted core) at the next one,
and the thread that runs the model waits for it at every barrier of every matrix product.

One model load on the main thread was enough to cross that line: it left the main thread a
team of its own beside the engine thread's. Measured on 2 cores (bench/http.py's workload),
the engine thread then sat in futex waits 14% of the time and its OpenMP worker 43%, the
server kept 1.34 of 2 cores busy, and removing that second team served 1.45x (base model)
and 1.59x (32 adapters) the tokens per second. See docs/performance.md.

So in the serving process only the engine thread keeps a team. Work that runs torch ops
before it starts (loading the model, allocating LoRA slots and the KV cache) runs in
``on_own_thread``; work beside it (reading adapter weights: a dtype conversion splits once a
tensor passes 32,768 elements) on an ``OwnThreadExecutor``. Each call there gets a thread
that ends when the call returns, and its team, if it made one, ends with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def on_own_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on a new thread that has ended when this returns: its result, or its
    exception raised here."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        return pool.submit(fn).result()


class OwnThreadExecutor(Executor):
    """An executor that runs each call on a thread of its own, which ends with the call; at
    most ``max_workers`` calls run at once, the others wait for a turn."""

    def __init__(self, max_workers: int, name: str):
        self._turns = threading.BoundedSemaphore(max_workers)
        self._name = name
        self._lock = threading.Lock()  # guards _closed and _calls
        self._closed = False
        self._calls: dict[threading.Thread, Future] = {}  # submitted, not yet ended

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            try:
                with self._turns:
                    if not future.set_running_or_notify_cancel():
                        return  # cancelled while it waited
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as e:  # noqa: BLE001 - handed to whoever waits on it
                        future.set_exception(e)
            finally:
                with self._lock:
                    del self._calls[thread]

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._calls[thread] = future
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            calls = list(self._calls.items())
        if cancel_futures:
            for _, future in calls:
                future.cancel()  # only a call still waiting for its turn: running ones go on
        if wait:
            for thread, _ in calls:
                thread.join()
