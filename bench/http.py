"""Over HTTP, as a user sees it: ``python -m bench.http`` (a few minutes on 2 CPU cores).

Two real servers on the same checkpoint (the 58M benchmark Llama of bench/models.py) take the
same 32 concurrent chat requests (32 new tokens each, greedy, end-of-sequence ignored):

- ours (``python -m service``) with 32 requests over 32 distinct rank-8 adapters, and base-only;
- the peer, Hugging Face's ``transformers serve --continuous-batching``, base-only (it cannot
  serve a per-request adapter), from its own virtual environment (made on first run, see
  ``ensure_peer_venv``), with ``--cb-num-blocks`` bounding its KV cache;
- and our engine in this process on the same token ids and adapters: what HTTP costs.

A load generator in a process of its own (bench/http_load.py) sends the requests. Rounds are
interleaved (their order rotates) on a shared, noisy machine; each prints its throughputs and
ratios, then the medians of the per-round ratios. ``--profile`` then samples our server with
py-spy under the same load and prints where its threads spend their time.

Token-count fairness: ours takes ``ignore_eos``; the peer takes a ``generation_config`` with
``eos_token_id: -1`` (no EOS). Every request must end with ``finish_reason`` "length" (and,
where the response carries usage, 32 completion tokens), else the bench stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import httpx

from bench.engine import RANK, build_adapters
from bench.http_profile import profile_server
from bench.models import build_bench_llama
from bench.throughput import busy_seconds
from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings, child_environment
from service.engine.threads import on_own_thread

PEER_VENV = Path.home() / ".cache" / "loraloop-bench" / "peer-venv"
TORCH_WHEEL = "torch==2.13.0"  # the CPU wheel on disk (pip's find-links); never another torch
REQUESTS, NEW_TOKENS = 32, 32
WORDS = ("the river light stone window garden morning paper music table question answer city "
         "winter summer forest letter number friend story road mountain ocean voice house").split()


# --- the peer's environment ---

def ensure_peer_venv(venv: Path) -> Path:
    """``transformers serve`` in a venv of its own at our transformers version, torch installed
    first so that pip never picks another; made once, then reused. Returns the CLI's path."""
    cli = venv / "bin" / "transformers"
    if cli.is_file():
        return cli
    import importlib.metadata

    version = importlib.metadata.version("transformers")
    python = str(venv / "bin" / "python")
    constraints = venv / "constraints.txt"  # keeps the torch installed first, whatever is asked
    steps = [
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "-q", TORCH_WHEEL],
        [python, "-m", "pip", "install", "-q", "-c", str(constraints),
         f"transformers[serving]=={version}", "py-spy"],
    ]
    for step in steps:
        print(f"peer venv: {' '.join(step)}", flush=True)
        subprocess.run(["nice", "-n", "19", *step], check=True)
        if not constraints.exists():  # once the venv's folder is there
            constraints.write_text(TORCH_WHEEL + "\n")
    return cli


# --- servers ---

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {seconds} s")


def start_ours(settings: Settings, port: int, folder: Path, log: Path) -> subprocess.Popen:
    env = child_environment(settings, folder, dict(os.environ))
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    wait_ready(f"http://127.0.0.1:{port}/readyz", process)
    return process


def start_peer(cli: Path, model_dir: Path, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(cli), "serve", str(model_dir), "--continuous-batching", "--device", "cpu",
         "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
         # 256 blocks of 32 tokens: 8192 tokens of KV cache (256 MiB in float32), room for the
         # 32 requests' ~70 tokens each; unset, it sizes the cache from the host's memory
         "--cb-block-size", "32", "--cb-num-blocks", "256", "--log-level", "warning"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    wait_ready(f"http://127.0.0.1:{port}/health", process)
    return process


# --- measuring ---

def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoadClient:
    """The load generator process (bench/http_load.py), one job at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.http_load"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )

    def run(self, base_url: str, bodies: list[dict], stream: bool) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"base_url": base_url, "bodies": bodies, "stream": stream}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(10)


def check_tokens(label: str, result: dict) -> None:
    """Every request generated its NEW_TOKENS: token-count fairness."""
    reasons = set(result["finish_reasons"])
    counted = {t for t in result["completion_tokens"] if t is not None}
    if reasons != {"length"} or counted - {NEW_TOKENS}:
        raise RuntimeError(f"{label}: finish reasons {reasons}, completion tokens {counted}")


class Measure:
    """One measured run: tokens/s by the wall clock, the server's CPU seconds per request, and
    how many cores OTHER processes kept busy meanwhile (rounds disturbed by other sessions
    can be told apart)."""

    def __init__(self, label: str, tokens: int, seconds: float, ours_cpu: float, ttft: list[float], foreign: float,
                 client_cpu: float | None = None):
        self.label, self.tokens, self.seconds = label, tokens, seconds
        self.rate = tokens / seconds
        self.cpu_per_request = ours_cpu / REQUESTS
        # the load generator's, which shares these cores with the server it measures
        self.client_cpu_per_request = None if client_cpu is None else client_cpu / REQUESTS
        self.ttft = statistics.median(ttft) if ttft else None
        self.foreign = foreign


def over_http(label: str, client: LoadClient, url: str, pid: int, bodies: list[dict], stream: bool) -> Measure:
    busy, cpu, load_cpu = busy_seconds(), process_cpu(pid), process_cpu(client.process.pid)
    wall, bench_cpu = time.perf_counter(), time.process_time()
    result = client.run(url, bodies, stream)
    wall = time.perf_counter() - wall
    server_cpu = process_cpu(pid) - cpu
    known = server_cpu + process_cpu(client.process.pid) - load_cpu + time.process_time() - bench_cpu
    check_tokens(label, result)
    foreign = max(0.0, (busy_seconds() - busy - known) / wall)
    ttft = [t for t in result["ttft"] if t is not None]
    return Measure(label, REQUESTS * NEW_TOKENS, result["seconds"], server_cpu, ttft, foreign, result["cpu"])


def in_process(engine, prompts: list[list[int]], adapters: list[str | None], stream: bool) -> Measure:
    """The engine in this process on the same token ids: what is left once HTTP is gone."""
    from service.engine import SamplingParams

    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    ttfts: list[float] = []

    async def one(ids: list[int], adapter: str | None) -> int:
        started, n = time.perf_counter(), 0
        async with await engine.submit(ids, adapter, params) as events:
            async for event in events:
                if n == 0 and stream:
                    ttfts.append(time.perf_counter() - started)
                n += 1
        return n

    async def all_of_them() -> int:
        return sum(await asyncio.gather(*(one(p, a) for p, a in zip(prompts, adapters, strict=True))))

    busy, cpu, wall = busy_seconds(), time.process_time(), time.perf_counter()
    tokens = asyncio.run(all_of_them())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert tokens == REQUESTS * NEW_TOKENS, tokens
    foreign = max(0.0, (busy_seconds() - busy - cpu) / wall)
    return Measure("engine in-process", tokens, wall, cpu, ttfts, foreign)


# --- the workload ---

def conversations(seed: int = 0) -> list[list[dict]]:
    """32 distinct one-turn chats of 12 words (35-46 tokens once templated: the bench
    tokenizer's vocabulary is small)."""
    rng = random.Random(seed)
    return [[{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(12))}] for _ in range(REQUESTS)]


def ours_body(model: str, messages: list[dict], stream: bool) -> dict:
    body = {"model": model, "messages": messages, "max_tokens": NEW_TOKENS, "temperature": 0,
            "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def peer_body(model: str, messages: list[dict], stream: bool) -> dict:
    # a generation config of its own: greedy, EOS never matches (-1): the peer's ignore_eos
    config = {"do_sample": False, "eos_token_id": -1, "max_new_tokens": NEW_TOKENS}
    return {"model": model, "messages": messages, "max_tokens": NEW_TOKENS, "temperature": 0,
            "stream": stream, "generation_config": json.dumps(config)}


SERIES = ("ours, 32 adapters", "ours, base only", "peer, base only", "engine in-process, 32 adapters")
RATIOS = [  # numerator, denominator, target (None: shown, no target)
    ("ours, 32 adapters", "peer, base only", 1.2),
    ("ours, base only", "peer, base only", None),
    ("ours, 32 adapters", "engine in-process, 32 adapters", 0.95),  # HTTP costs <= 5%
]
QUIET = 0.25  # cores kept busy by other processes below which a measurement counts as quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--modes", default="stream,json", help="stream (SSE), json, or both")
    parser.add_argument("--profile", type=float, default=0, help="then profile our server this many seconds")
    parser.add_argument("--peer-venv", type=Path, default=PEER_VENV)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server logs)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    cli = ensure_peer_venv(args.peer_venv)
    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-http-"))
    processes: list[subprocess.Popen] = []
    client = None
    try:
        # on threads that end: the in-process engine's thread keeps the only OpenMP team
        # (service/engine/threads.py), as it does in our server
        model_dir = on_own_thread(lambda: build_bench_llama(work / "model"), "bench-build")
        folders = on_own_thread(lambda: build_adapters(model_dir, work / "adapters", REQUESTS), "bench-build")
        names = [f"a{i:02d}" for i in range(REQUESTS)]
        settings = Settings(
            data_dir=work / "server", base_model=str(model_dir), base_model_id="bench-llama",
            device="cpu", dtype="float32", max_active_adapters=REQUESTS, max_lora_rank=RANK,
            max_batch_size=REQUESTS, max_host_adapters=64, alias_poll_seconds=0,
            start_worker=False, demo_adapter=False,
        )
        info = base_model_info(settings)
        registry = open_registry(settings, info)
        for name, folder in zip(names, folders, strict=True):
            registry.publish(folder, name, "policy")
            registry.set_alias(name, "production", 1)

        ours_port, peer_port = free_port(), free_port()
        ours_url, peer_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{peer_port}"
        print("starting our server and the peer ...", flush=True)
        ours = start_ours(settings, ours_port, work / "ours-config", work / "ours.log")
        processes.append(ours)
        peer = start_peer(cli, model_dir, peer_port, work / "peer.log")
        processes.append(peer)

        from transformers import AutoTokenizer

        from service.engine import Engine

        chats = conversations()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # token ids (tokenize=True, return_dict=False), whatever the union transformers declares
        prompts = [cast(list[int], tokenizer.apply_chat_template(
            c, add_generation_prompt=True, tokenize=True, return_dict=False)) for c in chats]
        engine_settings = settings.model_copy(update={"data_dir": work / "in-process",
                                                      "cache_dir": work / "in-process" / "cache"})
        engine = Engine(engine_settings, registry, base_info=info)
        asyncio.run(_load_all(engine, names))

        client = LoadClient()
        workloads = {
            ("ours, 32 adapters", m): (ours_url, ours.pid, [ours_body(n, c, m == "stream") for n, c in zip(names, chats, strict=True)])
            for m in modes
        } | {
            ("ours, base only", m): (ours_url, ours.pid, [ours_body("base", c, m == "stream") for c in chats])
            for m in modes
        } | {
            ("peer, base only", m): (peer_url, peer.pid, [peer_body(str(model_dir), c, m == "stream") for c in chats])
            for m in modes
        }
        print(f"warm-up; prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, {NEW_TOKENS} new", flush=True)
        for (label, mode), (url, pid, bodies) in workloads.items():
            over_http(label, client, url, pid, bodies, mode == "stream")
        in_process(engine, prompts, list(names), True)

        idle = {name: process_cpu(pid) for name, pid in (("ours", ours.pid), ("peer", peer.pid))}
        time.sleep(3)  # what each server burns with no request at all (a polling thread shows)
        print("idle servers, CPU cores used: " + ", ".join(
            f"{name} {(process_cpu(pid) - idle[name]) / 3:.2f}" for name, pid in (("ours", ours.pid), ("peer", peer.pid))
        ), flush=True)
        rounds: list[dict[tuple[str, str], Measure]] = []
        keys = list(workloads)
        for r in range(args.rounds):
            measured: dict[tuple[str, str], Measure] = {}
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:  # rotate the order: no series always first
                url, pid, bodies = workloads[key]
                measured[key] = over_http(key[0], client, url, pid, bodies, key[1] == "stream")
            for m in modes:  # the engine streams its events either way
                measured[(SERIES[3], m)] = in_process(engine, prompts, list(names), m == "stream")
            rounds.append(measured)
            print_round(r + 1, measured, modes)
        if rounds:
            report(rounds, modes)
        if args.profile:
            bodies = workloads[("ours, 32 adapters", modes[0])][2]
            profile_server(ours.pid, args.profile, lambda: client.run(ours_url, bodies, modes[0] == "stream"),
                           args.peer_venv / "bin" / "py-spy", work)
        engine.close()
    finally:
        if client is not None:
            client.close()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


async def _load_all(engine, names: list[str]) -> None:
    await asyncio.gather(*(engine.load(n) for n in names))


def print_round(number: int, measured: dict, modes: list[str]) -> None:
    for m in modes:
        parts = [f"{label.split(',')[0]}{'+A' if 'adapters' in label else ''} {measured[(label, m)].rate:6.1f}"
                 for label in SERIES]
        ratios = [measured[(num, m)].rate / measured[(den, m)].rate for num, den, _ in RATIOS]
        foreign = max(x.foreign for (_, mm), x in measured.items() if mm == m)
        print(f"round {number} {m:<6} tok/s: {'  '.join(parts)} | ours+A/peer {ratios[0]:.2f}  "
              f"ours/peer {ratios[1]:.2f}  http/in-process {ratios[2]:.2f} | other load {foreign:.2f} cores",
              flush=True)


def report(rounds: list[dict], modes: list[str]) -> None:
    print(f"\n{REQUESTS} concurrent chat requests, {NEW_TOKENS} new tokens each (greedy, EOS ignored); "
          f"median of {len(rounds)} interleaved rounds")
    for m in modes:
        print(f"\n  {m}{' (SSE)' if m == 'stream' else ' (one JSON response)'}"
              f"{'':<28} tok/s   server CPU ms/request   TTFT p50 ms")
        for label in SERIES:
            xs = [r[(label, m)] for r in rounds]
            ttfts = [x.ttft for x in xs if x.ttft is not None]
            ttft = f"{statistics.median(ttfts) * 1000:8.0f}" if ttfts else "       -"
            print(f"    {label:<38} {statistics.median(x.rate for x in xs):7.1f} "
                  f"{statistics.median(x.cpu_per_request for x in xs) * 1000:14.0f} {ttft:>19}")
        client = [x.client_cpu_per_request for r in rounds for (_, mm), x in r.items()
                  if mm == m and x.client_cpu_per_request is not None]
        print(f"    the load generator's CPU per request: {statistics.median(client) * 1000:.1f} ms (median)")
        for num, den, target in RATIOS:
            pairs = [(r[(num, m)], r[(den, m)]) for r in rounds]
            quiet = [(a, b) for a, b in pairs if max(a.foreign, b.foreign) < QUIET]
            used = quiet or pairs
            ratio = statistics.median(a.rate / b.rate for a, b in used)
            # by CPU time: requests per server CPU second, which other sessions' load disturbs less
            by_cpu = statistics.median(b.cpu_per_request / a.cpu_per_request for a, b in pairs)
            per_round = " ".join(f"{a.rate / b.rate:.2f}" for a, b in pairs)
            verdict = "" if target is None else f"target >= {target}: {'ok' if ratio >= target else 'MISSED'}"
            print(f"    {num} / {den}: wall {ratio:.2f}x, CPU time {by_cpu:.2f}x  (wall by round: {per_round}; "
                  f"{len(quiet) or 'no'} quiet) {verdict}")
    foreign = [x.foreign for r in rounds for x in r.values()]
    print(f"\n  other processes kept {min(foreign):.2f}-{max(foreign):.2f} cores busy during the measurements "
          f"(quiet: < {QUIET}); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
