"""Where our server's request path spends its time, under bench/http.py's load: py-spy samples
every thread of the server process (on CPU only, not idle) while the load runs, and the samples
are summed by thread (event loop, engine, tokenizer pool, others) and, on the event loop, by
what the innermost recognisable frame belongs to (JSON, pydantic, chat template, ...)."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

# (category, substrings of a frame "function (file:line)"), first match from the innermost frame
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON encode/decode", ("json/encoder.py", "json/decoder.py", "json/__init__.py", "orjson", "dumps (", "loads (")),
    ("chat template / tokenizer", ("jinja2", "tokenization_utils", "tokenizers", "chat_template", "text.py")),
    ("pydantic (validate, dump)", ("pydantic",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("HTTP parsing / writing (uvicorn)", ("uvicorn/protocols", "httptools", "h11")),
    ("starlette / fastapi (routing, middleware, responses)", ("starlette", "fastapi")),
    ("our OpenAI service (events -> chunks)", ("service/openai/",)),
    ("our engine hand-off (TokenStream, EventSink)", ("service/engine/stream.py", "service/engine/request.py")),
    ("our middleware and app (service/*)", ("/service/",)),
    ("asyncio / uvloop scheduling", ("asyncio", "uvloop", "anyio")),
]


def thread_of(frames: list[str]) -> str:
    text = ";".join(frames)
    if "service/engine/engine_thread.py" in text and "_loop" in text:
        return "engine thread (scheduler, model)"
    if "completion_log" in text or "group_commit" in text:
        return "writer threads (completion log, group commit)"
    if "concurrent/futures/thread.py" in text:
        return "thread pools (tokenize, lookups)"
    if "uvicorn" in text or "run_forever" in text or "run_until_complete" in text:
        return "event loop"
    return "other"


def category_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarize(raw: Path) -> tuple[Counter, Counter, int]:
    """(samples by thread, event-loop samples by category, total samples) of py-spy's raw
    (collapsed stacks) output: one "frame;frame;... count" line per distinct stack."""
    threads: Counter = Counter()
    loop: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, n = stack.split(";"), int(count)
        thread = thread_of(frames)
        threads[thread] += n
        if thread == "event loop":
            loop[category_of(frames)] += n
    return threads, loop, sum(threads.values())


def profile_server(pid: int, seconds: float, load: Callable[[], dict], py_spy: Path, work: Path) -> None:
    raw = work / "profile.txt"
    # --nonblocking: read the server's memory without pausing it (a paused server under
    # 32 streams would be measured, not profiled)
    spy = subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
         "--format", "raw", "--output", str(raw), "--threads", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    jobs, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        load()
        jobs += 1
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if spy.returncode != 0 or not raw.is_file():
        print(f"py-spy failed: {spy.stderr.read().decode() if spy.stderr else ''}")
        return
    threads, loop, total = summarize(raw)
    print(f"\nprofile of our server, {seconds:g} s under the load ({jobs} batches of requests); "
          f"py-spy samples on CPU by thread (100/s):")
    for name, n in threads.most_common():
        print(f"  {name:<52} {n / total:6.1%}")
    loop_total = sum(loop.values()) or 1
    print("  the event loop's samples, by the innermost frame's kind:")
    for name, n in loop.most_common():
        print(f"    {name:<56} {n / loop_total:6.1%}")
    print(f"  (collapsed stacks, for a flame graph: {raw})")
